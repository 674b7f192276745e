"""A model's layer list: :class:`LayerSpec` and :class:`BlockSpec`, and parsing a list of
layers and blocks (``model.layers``, or the named lists of ``model.stages``) into them.

A layer is a mapping with an ``op`` of :data:`archsearch.grammar.ops.OPS` and that op's
fields. Blocks (the layer list may hold them wherever it holds layers; they nest):

- ``{op: residual, body: [...], shortcut: identity}``: ``y = body(x) + shortcut(x)``; the
  shortcut is ``identity`` (the default) or a layer list such as
  ``[{op: conv, out: 64, k: 1, s: 2}]``,
- ``{op: branches, merge: concat, paths: [[...], [...]]}``: parallel paths from the same
  input, merged by ``add`` (same C, H, W) or ``concat`` (same H, W; channels add up); an
  empty path is the identity,
- ``{op: repeat, times: N, body: [...]}``: the body N times in a row (``times`` may be a
  knob, ``${model.depth}``); each repetition has its own weights.

``residual`` and ``branches`` take an optional ``act`` applied after the merge and an optional
``dropout`` (a probability; 0, the default, means none) after that. A block
nests at most :data:`MAX_DEPTH` deep and a model expands to at most :data:`MAX_LAYERS`
layers. Every error is a :class:`SpecError` whose text starts with the YAML path of the culprit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from archsearch.errors import SpecError
from archsearch.grammar.ops import ACTIVATIONS, EXTRAS, OPS

__all__ = ["BLOCKS", "MAX_DEPTH", "MAX_LAYERS", "BlockSpec", "LayerSpec", "checked", "node_dict", "parse_extras",
           "parse_layers", "type_name", "walk"]

BLOCKS = ("residual", "branches", "repeat")
_CORE_OPS = ("conv", "sepconv", "maxpool", "gap", "linear")  # named first where the ops are listed, then the blocks
MERGES = ("add", "concat")
MAX_DEPTH = 8  # blocks inside blocks
MAX_LAYERS = 2000  # layers after expanding repeats


@dataclass(frozen=True)
class LayerSpec:
    """One layer: its op, the op's fields with defaults filled in, and its extras."""

    index: int
    op: str
    args: Mapping[str, Any]
    bn: bool = False
    act: str = "none"
    dropout: float = 0.0
    where: str = ""  # its YAML path (parsing sets it; a hand-built layer falls back to model.layers[index])

    @property
    def path(self) -> str:
        return self.where or f"model.layers[{self.index}]"

    def describe(self, order: tuple[str, ...] = ("op", "act", "dropout", "bn")) -> str:
        """Kernel, dilation, stride, padding, then the extras in the model's ``order``,
        e.g. ``3x3 d2 p2 | relu,drop0.05,bn``."""
        a = self.args
        if self.op in ("conv", "sepconv"):
            s = f"{a['k']}x{a['k']}"
            if a["d"] > 1:
                s += f" d{a['d']}"
            if a["s"] > 1:
                s += f" s{a['s']}"
            p = a["p"] if a["p"] is not None else a["d"] * (a["k"] - 1) // 2
            s += f" p{p}"
            if a.get("padding_mode", "zeros") != "zeros":
                s += f" {a['padding_mode']}"
            if self.op == "conv" and a["groups"] > 1:
                s += f" g{a['groups']}"
            if a["bias"]:
                s += " +bias"
        elif self.op in ("maxpool", "avgpool"):
            s = f"{a['k']}x{a['k']} s{a['s'] if a['s'] is not None else a['k']}" + (f" p{a['p']}" if a["p"] else "")
        elif self.op == "linear":
            s = "+bias" if a["bias"] else ""
        elif self.op == "act":
            s = a["act"]
        elif self.op in ("dropout", "dropout2d"):
            s = f"p{a['p']:g}"
        else:
            s = ""
        extras = self.extras(order)
        return (s + (" | " + ",".join(extras) if extras else "")).strip()

    def extras(self, order: tuple[str, ...] = ("op", "act", "dropout", "bn")) -> list[str]:
        names = {"bn": "bn" if self.bn else "", "act": "" if self.act == "none" else self.act,
                 "dropout": f"drop{self.dropout:g}" if self.dropout else ""}
        return [names[k] for k in order if k != "op" and names[k]]


@dataclass(frozen=True)
class BlockSpec:
    """Parallel paths from one input, merged: ``residual`` (body + shortcut, added) or
    ``branches`` (``add`` or ``concat``). An empty path is the identity."""

    index: int
    op: str  # residual | branches
    paths: tuple[tuple, ...]  # each a tuple of LayerSpec / BlockSpec
    merge: str  # add | concat
    act: str = "none"
    where: str = ""
    path_names: tuple[str, ...] = ()  # "body", "shortcut" or "paths[i]", for display
    dropout: float = 0.0  # Dropout after the merge (and act); 0: none

    @property
    def path(self) -> str:
        return self.where or f"model.layers[{self.index}]"

    def describe(self, order: tuple[str, ...] = ()) -> str:
        parts = [f"{name}: {len(p)} layer(s)" if p else f"{name}: identity" for name, p in zip(self.path_names, self.paths)]
        after = [x for x in (self.act if self.act != "none" else "", f"drop{self.dropout:g}" if self.dropout else "") if x]
        return f"{self.merge} of " + ", ".join(parts) + (" | " + ",".join(after) if after else "")

    def to_dict(self) -> dict:
        d = {"op": self.op, "merge": self.merge, "act": self.act,
             "paths": [[node_dict(n) for n in p] for p in self.paths]}
        if self.dropout:  # (absent at 0, so the hash of a spec without it is what it was before the field existed)
            d["dropout"] = self.dropout
        return d


def node_dict(n: LayerSpec | BlockSpec) -> dict:
    """A layer or block as plain data (what the spec's hash and JSON are made of)."""
    if isinstance(n, BlockSpec):
        return n.to_dict()
    fields = OPS[n.op].fields
    args = {k: v for k, v in n.args.items() if not (k in fields and fields[k].implicit and v == fields[k].default)}
    # the extras first: a standalone act layer's own field ``act`` is what it does
    return {"op": n.op, "bn": n.bn, "act": n.act, "dropout": n.dropout, **args}


def walk(nodes):
    """Every LayerSpec in ``nodes``, blocks entered, in order."""
    for n in nodes:
        if isinstance(n, BlockSpec):
            for p in n.paths:
                yield from walk(p)
        else:
            yield n


# ------------------------------------------------------------------ field values
def type_name(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def checked(path: str, kind: str, v: Any, choices: tuple = ()) -> Any:
    """``v`` as a field of ``kind`` (``pos_int``, ``nonneg_int``, ``bool``, ``act``, ``layer_act``
    (an activation but ``none``), ``dropout``, ``choice`` (one of ``choices``)) takes it, or
    SpecError naming ``path``."""
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
    elif kind == "layer_act":
        real = [a for a in ACTIVATIONS if a != "none"]
        if not isinstance(v, str) or v not in real:
            why = "'none' would be an empty layer" if v in ("none", None, False) else f"unknown activation {v!r}"
            raise SpecError(path, f"{why}; choose one of {', '.join(real)}")
    elif kind == "choice":
        if not isinstance(v, str) or v not in choices:
            raise SpecError(path, f"unknown {path.rsplit('.', 1)[-1]} {v!r}; choose one of {', '.join(choices)}")
    elif kind == "dropout":
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
            raise SpecError(path, f"must be a number in [0, 1), got {v!r}")
        v = float(v)
    return v


_EXTRA_KINDS = {"bn": "bool", "act": "act", "dropout": "dropout"}


def parse_extras(path: str, m: Mapping, base: dict) -> dict:
    """``base`` (bn / act / dropout) with the extras ``m`` sets, checked."""
    out = dict(base)
    for key in EXTRAS:
        if key in m:
            out[key] = checked(f"{path}.{key}", _EXTRA_KINDS[key], m[key])
    return out


# ------------------------------------------------------------------ layers and blocks
def _parse_layer(i: int, raw: Mapping, defaults: dict, path: str) -> LayerSpec:
    op = raw["op"]
    od = OPS[op]
    allowed = set(od.fields) | ({*EXTRAS} if od.extras else set()) | {"op"}
    for key in raw:
        if key not in allowed:
            valid = f"valid fields: {', '.join(sorted(allowed - {'op'}))}" if len(allowed) > 1 else f"{op} takes no fields"
            raise SpecError(f"{path}.{key}", f"unknown field for op {op!r}; {valid}")
    args = {}
    for name, fd in od.fields.items():
        if name in raw and raw[name] is not None:
            args[name] = checked(f"{path}.{name}", fd.kind, raw[name], fd.choices)
        elif fd.required:
            raise SpecError(f"{path}.{name}", f"missing (required by op {op!r})")
        else:
            args[name] = fd.default
    extras = {"bn": False, "act": "none", "dropout": 0.0}
    if od.extras:
        extras = parse_extras(path, raw, defaults if od.takes_defaults else extras)
    return LayerSpec(i, op, args, **extras, where=path)


class _LayerCount:
    """How many layers the model has expanded to so far (repeats counted in full), at most MAX_LAYERS."""

    def __init__(self):
        self.layers = 0

    def add(self, path: str, n: int) -> None:
        self.layers += n
        if self.layers > MAX_LAYERS:
            raise SpecError(path, f"the model expands to more than {MAX_LAYERS} layers here (repeats multiply "
                                  "their bodies); lower a repeat's times or nest fewer repeats")


_BLOCK_FIELDS = {"residual": ("op", "body", "shortcut", "act", "dropout"),
                 "branches": ("op", "paths", "merge", "act", "dropout"),
                 "repeat": ("op", "times", "body")}


def _parse_list(raw: Any, path: str, defaults: dict, depth: int, count: _LayerCount) -> tuple:
    if raw is None or isinstance(raw, (str, Mapping)) or not hasattr(raw, "__iter__"):
        raise SpecError(path, f"must be a list of layers, got {type_name(raw)}")
    out = []
    for i, item in enumerate(raw):
        node = _parse_node(i, item, defaults, f"{path}[{i}]", depth, count)
        out.extend(node if isinstance(node, list) else [node])
    return tuple(out)


def _parse_node(i: int, raw: Any, defaults: dict, path: str, depth: int, count: _LayerCount):
    """A layer, a block, or (for ``repeat``) a list of nodes."""
    choices = ", ".join((*_CORE_OPS, *BLOCKS, *(o for o in OPS if o not in _CORE_OPS)))
    if not isinstance(raw, Mapping):
        raise SpecError(path, f"must be a mapping like {{op: conv, out: 64}}, got {type_name(raw)}")
    if "_target_" in raw:
        raise SpecError(f"{path}._target_", "specs are data: no code is executed from a layer")
    if "op" not in raw:
        raise SpecError(f"{path}.op", f"missing; choose one of {choices}")
    op = raw["op"]
    if op not in OPS and op not in BLOCKS:
        raise SpecError(f"{path}.op", f"unknown op {op!r}; choose one of {choices}")
    if op in OPS:
        count.add(path, 1)
        return _parse_layer(i, raw, defaults, path)
    if depth >= MAX_DEPTH:
        raise SpecError(path, f"blocks nest more than {MAX_DEPTH} deep here; flatten the model")
    for key in raw:
        if key not in _BLOCK_FIELDS[op]:
            raise SpecError(f"{path}.{key}", f"unknown field for op {op!r}; valid fields: "
                                             f"{', '.join(k for k in _BLOCK_FIELDS[op] if k != 'op')}")
    if op == "repeat":
        return _parse_repeat(raw, defaults, path, depth, count)
    act = checked(f"{path}.act", "act", raw.get("act", "none"))
    drop = checked(f"{path}.dropout", "dropout", raw.get("dropout", 0.0))
    if op == "residual":
        if "body" not in raw:
            raise SpecError(f"{path}.body", "missing; a residual block adds body(x) to shortcut(x)")
        body = _parse_list(raw["body"], f"{path}.body", defaults, depth + 1, count)
        if not body:
            raise SpecError(f"{path}.body", "empty; a residual body needs at least one layer")
        sc = raw.get("shortcut", "identity")
        short = () if sc in (None, "identity") else _parse_shortcut(sc, defaults, path, depth, count)
        return BlockSpec(i, op, (body, short), "add", act, path, ("body", "shortcut"), drop)
    merge = raw.get("merge", "concat")
    if merge not in MERGES:
        raise SpecError(f"{path}.merge", f"unknown merge {merge!r}; choose one of {', '.join(MERGES)}")
    paths_raw = raw.get("paths")
    if paths_raw is None:
        raise SpecError(f"{path}.paths", "missing; branches needs a list of paths, each a list of layers")
    if isinstance(paths_raw, (str, Mapping)) or not hasattr(paths_raw, "__iter__") or len(list(paths_raw)) < 2:
        raise SpecError(f"{path}.paths", f"must be a list of at least 2 paths (each a list of layers), "
                                         f"got {type_name(paths_raw)}")
    paths = tuple(_parse_list(p, f"{path}.paths[{j}]", defaults, depth + 1, count) for j, p in enumerate(paths_raw))
    return BlockSpec(i, op, paths, merge, act, path, tuple(f"paths[{j}]" for j in range(len(paths))), drop)


def _parse_shortcut(sc: Any, defaults: dict, path: str, depth: int, count: _LayerCount) -> tuple:
    if isinstance(sc, str):
        raise SpecError(f"{path}.shortcut", f"unknown shortcut {sc!r}; use identity or a list of layers")
    return _parse_list(sc, f"{path}.shortcut", defaults, depth + 1, count)


def _parse_repeat(raw: Mapping, defaults: dict, path: str, depth: int, count: _LayerCount) -> list:
    times = raw.get("times")
    if isinstance(times, bool) or not isinstance(times, int) or times < 1:
        raise SpecError(f"{path}.times", f"must be an int >= 1 (how many times the body repeats), got {times!r}")
    if "body" not in raw:
        raise SpecError(f"{path}.body", "missing; repeat needs a body (a list of layers)")
    first = count.layers
    body = _parse_list(raw["body"], f"{path}.body", defaults, depth + 1, count)
    if not body:
        raise SpecError(f"{path}.body", "empty; a repeat body needs at least one layer")
    count.add(path, (count.layers - first) * (times - 1))
    return [_relabel(n, f"{path}.body", f"{path}({r}).body") for r in range(1, times + 1) for n in body]


def _relabel(node, old: str, new: str):
    """A repetition's copy of a node, its YAML path marked with the repetition: ``...(2).body[0]``."""
    if isinstance(node, BlockSpec):
        paths = tuple(tuple(_relabel(n, old, new) for n in p) for p in node.paths)
        return replace(node, where=node.where.replace(old, new, 1), paths=paths)
    return replace(node, where=node.where.replace(old, new, 1))


def parse_layers(cfg: Mapping, defaults: dict) -> tuple:
    """The model's ``layers`` (a list), or its ``stages`` (named lists, concatenated in order),
    repeats expanded; ``defaults`` are the extras of ``layer_defaults``."""
    count = _LayerCount()
    if "stages" in cfg and cfg["stages"] is not None:
        if cfg.get("layers") is not None:
            raise SpecError("model.stages", "a model has layers or stages, not both")
        stages = cfg["stages"]
        if not isinstance(stages, Mapping) or not stages:
            raise SpecError("model.stages", f"must be a mapping of named layer lists, got {type_name(stages)}")
        out: list = []
        for name, items in stages.items():
            out.extend(_parse_list(items, f"model.stages.{name}", defaults, 0, count))
        if not out:
            raise SpecError("model.stages", "empty model: add at least one layer")
        return tuple(_reindex(out))
    layers_raw = cfg.get("layers")
    if layers_raw is None:
        raise SpecError("model.layers", "missing; a model is a list of layers")
    if isinstance(layers_raw, (str, Mapping)) or not hasattr(layers_raw, "__iter__"):
        raise SpecError("model.layers", f"must be a list of layers, got {type_name(layers_raw)}")
    layers = _parse_list(layers_raw, "model.layers", defaults, 0, count)
    if not layers:
        raise SpecError("model.layers", "empty model: add at least one layer")
    return tuple(_reindex(layers))  # repeats at the top level: number the expanded list


def _reindex(nodes) -> list:
    """Top-level position numbers of an expanded list (each node keeps its YAML path)."""
    return [replace(n, index=k) if n.index != k else n for k, n in enumerate(nodes)]
