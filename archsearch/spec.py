"""Parse a model config (``conf/model/NAME.yaml``) into a typed, frozen :class:`ModelSpec`.

Model-level fields (the layer grammar itself is documented in :mod:`archsearch.ops`):

- ``name``: the model's name (defaults to the config file's name),
- ``in_channels``, ``input_size``: the input image (3, 32 for CIFAR-10),
- ``num_classes``: what the last layer must output,
- ``order``: order of op and extras inside a layer (default ``[op, bn, act, dropout]``),
- ``layer_defaults``: ``bn`` / ``act`` / ``dropout`` for conv and sepconv layers,
- ``layers``: the ordered list of layers,
- knobs: any other scalar key (``width: 64``, ``dropout: 0.05``) is a knob that layers
  reference with interpolation (``out: ${model.width}``) so a sweep can turn one value.
  A knob nothing references is reported as an unknown field (most likely a typo).

Every error is a :class:`SpecError` whose text starts with the YAML path of the culprit,
e.g. ``model.layers[7].k: must be a positive int, got 0``. Nothing here imports torch,
hydra or mlflow.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .ops import ACTIVATIONS, EXTRAS, OPS

__all__ = ["LayerSpec", "ModelSpec", "SpecError", "parse_spec", "spec_hash"]

MODEL_FIELDS = ("name", "in_channels", "input_size", "num_classes", "order", "layer_defaults", "layers")
ORDER_ITEMS = ("op", "bn", "act", "dropout")
DEFAULT_ORDER = ("op", "bn", "act", "dropout")


class SpecError(ValueError):
    """A malformed model spec. ``str(err)`` is one line: ``<yaml path>: <what is wrong>``."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@dataclass(frozen=True)
class LayerSpec:
    """One layer: its op, the op's fields with defaults filled in, and its extras."""

    index: int
    op: str
    args: Mapping[str, Any]
    bn: bool = False
    act: str = "none"
    dropout: float = 0.0

    @property
    def path(self) -> str:
        return f"model.layers[{self.index}]"

    def describe(self) -> str:
        a = self.args
        if self.op in ("conv", "sepconv"):
            s = f"{a['k']}x{a['k']}"
            if a["d"] > 1:
                s += f" d{a['d']}"
            if a["s"] > 1:
                s += f" s{a['s']}"
            p = a["p"] if a["p"] is not None else a["d"] * (a["k"] - 1) // 2
            s += f" p{p}"
            if self.op == "conv" and a["groups"] > 1:
                s += f" g{a['groups']}"
            if a["bias"]:
                s += " +bias"
        elif self.op == "maxpool":
            s = f"{a['k']}x{a['k']} s{a['s'] if a['s'] is not None else a['k']}"
        elif self.op == "linear":
            s = "+bias" if a["bias"] else ""
        else:
            s = ""
        return (s + (" | " + ",".join(self.extras()) if self.extras() else "")).strip()

    def extras(self, order: tuple[str, ...] = ("op", "act", "dropout", "bn")) -> list[str]:
        names = {"bn": "bn" if self.bn else "", "act": "" if self.act == "none" else self.act,
                 "dropout": f"drop{self.dropout:g}" if self.dropout else ""}
        return [names[k] for k in order if k != "op" and names[k]]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    in_channels: int
    input_size: int
    num_classes: int
    order: tuple[str, ...]
    layers: tuple[LayerSpec, ...]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.input_size, self.input_size)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "in_channels": self.in_channels,
            "input_size": self.input_size,
            "num_classes": self.num_classes,
            "order": list(self.order),
            "layers": [
                {"op": l.op, **dict(l.args), "bn": l.bn, "act": l.act, "dropout": l.dropout}
                for l in self.layers
            ],
        }


def spec_hash(spec: ModelSpec) -> str:
    """Short content hash of the resolved architecture (name excluded)."""
    d = spec.to_dict()
    d.pop("name")
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def _type_name(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _check(path: str, kind: str, v: Any) -> Any:
    if kind == "pos_int":
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise SpecError(path, f"must be a positive int, got {v!r}")
    elif kind == "nonneg_int":
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise SpecError(path, f"must be a non-negative int, got {v!r}")
    elif kind == "bool":
        if not isinstance(v, bool):
            raise SpecError(path, f"must be true or false, got {v!r}")
    elif kind == "act":
        if v is None or v is False:
            v = "none"
        if not isinstance(v, str) or v not in ACTIVATIONS:
            raise SpecError(path, f"unknown activation {v!r}; choose one of {', '.join(ACTIVATIONS)}")
    elif kind == "dropout":
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
            raise SpecError(path, f"must be a number in [0, 1), got {v!r}")
        v = float(v)
    return v


_EXTRA_KINDS = {"bn": "bool", "act": "act", "dropout": "dropout"}


def _parse_extras(path: str, m: Mapping, base: dict) -> dict:
    out = dict(base)
    for key in EXTRAS:
        if key in m:
            out[key] = _check(f"{path}.{key}", _EXTRA_KINDS[key], m[key])
    return out


def _parse_layer(i: int, raw: Any, defaults: dict) -> LayerSpec:
    path = f"model.layers[{i}]"
    if not isinstance(raw, Mapping):
        raise SpecError(path, f"must be a mapping like {{op: conv, out: 64}}, got {_type_name(raw)}")
    if "op" not in raw:
        raise SpecError(f"{path}.op", f"missing; choose one of {', '.join(OPS)}")
    op = raw["op"]
    if op not in OPS:
        raise SpecError(f"{path}.op", f"unknown op {op!r}; choose one of {', '.join(OPS)}")
    od = OPS[op]
    allowed = set(od.fields) | ({*EXTRAS} if od.extras else set()) | {"op"}
    for key in raw:
        if key not in allowed:
            if key == "_target_":
                raise SpecError(f"{path}._target_", "specs are data: no code is executed from a layer")
            raise SpecError(
                f"{path}.{key}", f"unknown field for op {op!r}; valid fields: {', '.join(sorted(allowed - {'op'}))}"
            )
    args = {}
    for name, fd in od.fields.items():
        if name in raw and raw[name] is not None:
            args[name] = _check(f"{path}.{name}", fd.kind, raw[name])
        elif fd.required:
            raise SpecError(f"{path}.{name}", f"missing (required by op {op!r})")
        else:
            args[name] = fd.default
    extras = {"bn": False, "act": "none", "dropout": 0.0}
    if od.extras:
        extras = _parse_extras(path, raw, defaults if od.takes_defaults else extras)
    return LayerSpec(i, op, args, **extras)


_INTERP = re.compile(r"\$\{\s*model\.([A-Za-z_][\w]*)")


def parse_spec(cfg: Mapping, *, raw: Mapping | None = None, name: str | None = None) -> ModelSpec:
    """Turn a resolved model mapping into a :class:`ModelSpec`, or raise :class:`SpecError`.

    ``raw`` is the same mapping before interpolation; when given, unused knobs are
    reported as unknown fields.
    """
    if not isinstance(cfg, Mapping):
        raise SpecError("model", f"must be a mapping, got {_type_name(cfg)}")
    for key in ("in_channels", "input_size", "num_classes"):
        if key not in cfg:
            raise SpecError(f"model.{key}", "missing")
        _check(f"model.{key}", "pos_int", cfg[key])
    order = tuple(cfg.get("order") or DEFAULT_ORDER)
    if sorted(order) != sorted(ORDER_ITEMS):
        raise SpecError("model.order", f"must list each of {', '.join(ORDER_ITEMS)} once, got {list(order)}")
    ld = cfg.get("layer_defaults") or {}
    if not isinstance(ld, Mapping):
        raise SpecError("model.layer_defaults", f"must be a mapping, got {_type_name(ld)}")
    for key in ld:
        if key not in EXTRAS:
            raise SpecError(f"model.layer_defaults.{key}", f"unknown field; valid fields: {', '.join(EXTRAS)}")
    defaults = _parse_extras("model.layer_defaults", ld, {"bn": False, "act": "none", "dropout": 0.0})

    layers_raw = cfg.get("layers")
    if layers_raw is None:
        raise SpecError("model.layers", "missing; a model is a list of layers")
    if isinstance(layers_raw, (str, Mapping)) or not hasattr(layers_raw, "__iter__"):
        raise SpecError("model.layers", f"must be a list of layers, got {_type_name(layers_raw)}")
    layers = tuple(_parse_layer(i, l, defaults) for i, l in enumerate(layers_raw))
    if not layers:
        raise SpecError("model.layers", "empty model: add at least one layer")
    # knobs: any other key must be a scalar that some field references
    used: set[str] = set()
    if raw is not None:
        used = set(_INTERP.findall(json.dumps(_plain(raw))))
    for key, v in cfg.items():
        if key in MODEL_FIELDS:
            continue
        if isinstance(v, (Mapping, list, tuple)) or (raw is not None and key not in used):
            raise SpecError(
                f"model.{key}",
                f"unknown field; model fields are {', '.join(MODEL_FIELDS)} (other scalar keys are "
                f"knobs and must be referenced by a layer as ${{model.{key}}})",
            )

    nm = cfg.get("name") or name or "model"
    return ModelSpec(str(nm), cfg["in_channels"], cfg["input_size"], cfg["num_classes"], order, layers)


def _plain(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x if isinstance(x, (str, int, float, bool)) or x is None else str(x)
