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


def _flow(d: dict) -> str:
    return "{" + ", ".join(f"{k}: {_scalar(v)}" for k, v in d.items()) + "}"


def _lines(layers: list, path: str, indent: str, labels: dict) -> list[str]:
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
                    out += _lines(value, f"{here}.{key}", indent + "    ", labels)
                elif key == "paths":
                    out.append(f"{indent}  paths:")
                    for j, p in enumerate(value):
                        out.append(f"{indent}    -" + (" []" if not p else ""))
                        out += _lines(p, f"{here}.paths[{j}]", indent + "      ", labels)
                else:
                    out.append(f"{indent}  {key}: {_scalar(value)}")
        else:
            out.append(f"{indent}- {_flow(layer)}" + (f"    # {labels[here]}" if here in labels else ""))
    return out


def model_yaml(imp: Imported) -> str:
    s, a = imp.spec_dict, imp.analysis
    init = " ".join(f"init.{k}={v}" for k, v in imp.init.items()) or "(none)"
    head = [f"# Imported by python -m archsearch.import from {imp.source} (class or factory {imp.label})",
            f"#   arguments: {init}; input {s['in_channels']}x{s['input_size']}x{s['input_size']}",
            f"# {a.params:,} params, RF {a.rf}, {a.macs:,} MACs (archsearch's analysis of this file)",
            "# checks passed: " + imp.proof.summary()]
    body = [f"name: {s['name']}", f"in_channels: {s['in_channels']}", f"input_size: {s['input_size']}   # pixels",
            f"num_classes: {s['num_classes']}", f"order: [{', '.join(s['order'])}]", "layers:"]
    return "\n".join(head + body + _lines(s["layers"], "model.layers", "  ", imp.emitted.labels)) + "\n"


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
