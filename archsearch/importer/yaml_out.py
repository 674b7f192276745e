"""An imported model as a YAML model file: a header that says where it came from and what was
proven, then the spec, one layer a line (with the user's module names as comments)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from archsearch.importer.importing import Imported

__all__ = ["model_yaml", "write_atomically"]


def _scalar(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    return str(v)


KNOB = '"${model.dropout}"'  # how a layer refers to the model's dropout knob


def _flow(d: dict, knob: float | None = None) -> str:
    def value(k, v):
        return KNOB if k == "dropout" and knob is not None and d["op"] in _KNOBBED and v == knob else _scalar(v)
    return "{" + ", ".join(f"{k}: {value(k, v)}" for k, v in d.items()) + "}"


_KNOBBED = ("conv", "sepconv")


def dropout_knob(layers: list) -> float | None:
    """The one dropout rate every conv / sepconv with a dropout shares, if they share one: written as the
    model's ``dropout`` knob (as in conf/model/dilated_sep.yaml), so sweeps over ``model.dropout``
    (sweep=hparams) turn it."""
    rates = set()

    def walk(ls: list) -> None:
        for layer in ls:
            for key in ("body", "shortcut"):
                if isinstance(layer.get(key), list):
                    walk(layer[key])
            for path in layer.get("paths") or []:
                walk(path)
            if layer["op"] in _KNOBBED and layer.get("dropout"):
                rates.add(layer["dropout"])

    walk(layers)
    return rates.pop() if len(rates) == 1 else None


def _lines(layers: list, path: str, indent: str, labels: dict, knob: float | None = None) -> list[str]:
    out = []
    for i, layer in enumerate(layers):
        here = f"{path}[{i}]"
        if layer["op"] in ("residual", "branches"):
            out.append(f"{indent}- op: {layer['op']}" + (f"    # {labels[here]}" if here in labels else ""))
            for key, value in layer.items():
                if key == "op":
                    continue
                if key in ("body", "shortcut") and isinstance(value, list):
                    out.append(f"{indent}  {key}:" + ("" if value else " []"))
                    out += _lines(value, f"{here}.{key}", indent + "    ", labels, knob)
                elif key == "paths":
                    out.append(f"{indent}  paths:")
                    for j, p in enumerate(value):
                        out.append(f"{indent}    -" + (" []" if not p else ""))
                        out += _lines(p, f"{here}.paths[{j}]", indent + "      ", labels, knob)
                else:
                    out.append(f"{indent}  {key}: {_scalar(value)}")
        else:
            out.append(f"{indent}- {_flow(layer, knob)}" + (f"    # {labels[here]}" if here in labels else ""))
    return out


def model_yaml(imp: Imported) -> str:
    s, a = imp.spec_dict, imp.analysis
    init = " ".join(f"init.{k}={v}" for k, v in imp.init.items()) or "(none)"
    head = [f"# Imported by python -m archsearch.import from {imp.source} (class or factory {imp.label})",
            f"#   arguments: {init}; input {s['in_channels']}x{s['input_size']}x{s['input_size']}",
            f"# {a.params:,} params, RF {a.rf}, {a.macs:,} MACs (archsearch's analysis of this file)",
            "# checks passed: " + imp.proof.summary()]
    body = [f"name: {s['name']}", f"in_channels: {s['in_channels']}", f"input_size: {s['input_size']}   # pixels",
            f"num_classes: {s['num_classes']}", f"order: [{', '.join(s['order'])}]"]
    knob = dropout_knob(s["layers"])
    if knob is not None:
        body.append(f"dropout: {_scalar(knob)}   # knob: the dropout of every conv that has one (sweeps turn it)")
    body.append("layers:")
    return "\n".join(head + body + _lines(s["layers"], "model.layers", "  ", imp.emitted.labels, knob)) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """A temporary file in the same folder, renamed over ``path``: never a half-written model file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
