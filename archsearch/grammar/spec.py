"""Parse a model config (``conf/model/NAME.yaml``) into a typed, frozen :class:`ModelSpec`.

Model-level fields (the layer grammar itself is documented in :mod:`archsearch.grammar.ops`,
blocks in :mod:`archsearch.grammar.layers`):

- ``name``: the model's name (defaults to the config file's name),
- ``in_channels``, ``input_size``: the input image (3, 32 for CIFAR-10),
- ``num_classes``: what the last layer must output,
- ``order``: order of op and extras inside a layer (default ``[op, bn, act, dropout]``),
- ``layer_defaults``: ``bn`` / ``act`` / ``dropout`` for conv and sepconv layers,
- ``layers``: the ordered list of layers and blocks, or ``stages``: named lists of them
  (``stages: {c1: [...], c2: [...]}``, in order; ``model.stages.c1.0.op=sepconv`` addresses a
  layer), never both,
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

from archsearch.errors import SpecError
from archsearch.grammar.layers import (
    BlockSpec,
    LayerSpec,
    checked,
    node_dict,
    parse_extras,
    parse_layers,
    type_name,
    walk,
)
from archsearch.grammar.ops import EXTRAS

__all__ = ["BlockSpec", "LayerSpec", "ModelSpec", "parse_spec", "spec_hash", "walk"]

MODEL_FIELDS = ("name", "in_channels", "input_size", "num_classes", "order", "layer_defaults", "layers", "stages")
ORDER_ITEMS = ("op", "bn", "act", "dropout")
DEFAULT_ORDER = ("op", "bn", "act", "dropout")


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
            "layers": [node_dict(n) for n in self.layers],
        }


def spec_hash(spec: ModelSpec) -> str:
    """Short content hash of the resolved architecture (name excluded)."""
    d = spec.to_dict()
    d.pop("name")
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


_INTERP = re.compile(r"\$\{\s*model\.([A-Za-z_][\w]*)")


def parse_spec(cfg: Mapping, *, raw: Mapping | None = None, name: str | None = None) -> ModelSpec:
    """Turn a resolved model mapping into a :class:`ModelSpec`, or raise :class:`SpecError`.

    ``raw`` is the same mapping before interpolation; when given, unused knobs are
    reported as unknown fields.
    """
    if not isinstance(cfg, Mapping):
        raise SpecError("model", f"must be a mapping, got {type_name(cfg)}")
    for key in ("in_channels", "input_size", "num_classes"):
        if key not in cfg:
            raise SpecError(f"model.{key}", "missing")
        checked(f"model.{key}", "pos_int", cfg[key])
    order = tuple(cfg.get("order") or DEFAULT_ORDER)
    if sorted(order) != sorted(ORDER_ITEMS):
        raise SpecError("model.order", f"must list each of {', '.join(ORDER_ITEMS)} once, got {list(order)}")
    ld = cfg.get("layer_defaults") or {}
    if not isinstance(ld, Mapping):
        raise SpecError("model.layer_defaults", f"must be a mapping, got {type_name(ld)}")
    for key in ld:
        if key not in EXTRAS:
            raise SpecError(f"model.layer_defaults.{key}", f"unknown field; valid fields: {', '.join(EXTRAS)}")
    defaults = parse_extras("model.layer_defaults", ld, {"bn": False, "act": "none", "dropout": 0.0})

    layers = parse_layers(cfg, defaults)
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
