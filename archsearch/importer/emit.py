"""Steps (Prims in a row, Forks) -> the model spec's layer list, as plain data.

A conv (or a depthwise conv and the 1x1 conv after it, written as ``sepconv``) or a linear takes
the BN, activation and dropout that follow it as its extras, as far as the model's ``order``
allows; the order is the one that lets most of them attach. What cannot attach is a standalone
layer (``{op: bn}``, ``{op: act}``, ``{op: dropout}``). A fork with its merge is a ``residual``
block (an add of two paths, one empty or a 1x1 conv) or a ``branches`` block; an activation
and a dropout after the merge are the block's. Padding is always written out."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import permutations

from archsearch.importer.structure import Fork
from archsearch.importer.trace import Prim

__all__ = ["Emitted", "choose_order", "emit"]

EXTRA_KINDS = ("bn", "act", "dropout")
OPS_WITH_EXTRAS = ("conv", "sepconv", "linear")
ORDERS = [("op", *p) for p in permutations(EXTRA_KINDS)]  # op first: bn sits on the op's output channels


@dataclass
class Emitted:
    layers: list  # the spec's layer list (plain data)
    order: tuple
    shapes: dict = field(default_factory=dict)  # YAML path -> the traced output shape
    modules: dict = field(default_factory=dict)  # YAML path -> the user's modules holding its weights (None: a block)
    labels: dict = field(default_factory=dict)  # YAML path -> what it came from (module names)


def _is_depthwise(p: Prim, nxt) -> bool:
    a = p.args
    if not (p.kind == "conv" and isinstance(nxt, Prim) and nxt.kind == "conv"):
        return False
    b = nxt.args
    return (a["groups"] == a["cin"] == a["out"] and not a["bias"] and b["k"] == 1 and b["s"] == 1 and b["p"] == 0 and b["d"] == 1
            and b["groups"] == 1 and nxt.inputs == [p.name])


def _fuse_separable(steps: list) -> list:
    """A depthwise conv (groups == channels, no bias) right before a 1x1 conv: one sepconv."""
    out: list = []
    i = 0
    while i < len(steps):
        s = steps[i]
        if isinstance(s, Fork):
            out.append(Fork([_fuse_separable(p) for p in s.paths], s.merge))
        elif i + 1 < len(steps) and _is_depthwise(s, steps[i + 1]):
            pw = steps[i + 1]
            args = {k: s.args[k] for k in ("k", "s", "p", "d", "padding_mode")}
            out.append(Prim(pw.name, "sepconv", {"out": pw.args["out"], **args, "bias": pw.args["bias"]},
                            s.inputs, pw.shape, f"{s.label} + {pw.label}", s.where, [*s.modules, *pw.modules]))
            i += 2
            continue
        else:
            out.append(s)
        i += 1
    return out


def _runs(steps: list):
    """For every op that takes extras: the kinds of the extras right after it."""
    for i, s in enumerate(steps):
        if isinstance(s, Fork):
            for p in s.paths:
                yield from _runs(p)
        elif s.kind in OPS_WITH_EXTRAS:
            kinds = []
            for t in steps[i + 1:]:
                if isinstance(t, Fork) or t.kind not in EXTRA_KINDS or t.kind in kinds:
                    break
                kinds.append(t.kind)
            yield kinds


def _attached(kinds: list, order: tuple) -> int:
    """How many of ``kinds`` (in this sequence) attach to their op under ``order``."""
    pos = 0
    n = 0
    for k in kinds:
        j = order.index(k)
        if j <= pos:
            break
        pos, n = j, n + 1
    return n


def choose_order(steps: list) -> tuple:
    runs = list(_runs(steps))
    return max(ORDERS, key=lambda o: (sum(_attached(r, o) for r in runs), o == ("op", "bn", "act", "dropout")))


def _layer(p: Prim) -> dict:
    a = dict(p.args)
    if p.kind in ("conv", "sepconv"):
        d = {"op": p.kind, "out": a["out"], "k": a["k"], "s": a["s"], "p": a["p"], "d": a["d"]}
        if p.kind == "conv" and a["groups"] > 1:
            d["groups"] = a["groups"]
        if a["bias"]:
            d["bias"] = True
        if a["padding_mode"] != "zeros":
            d["padding_mode"] = a["padding_mode"]
        return d
    if p.kind == "linear":
        return {"op": "linear", "out": a["out"], "bias": a["bias"]}
    if p.kind == "act":
        return {"op": "act", "act": a["act"]}
    return {"op": p.kind, **a}  # bn, dropout, dropout2d, maxpool, avgpool, gap, log_softmax


class _Emitter:
    def __init__(self, order: tuple):
        self.out = Emitted([], order)

    def note(self, path: str, shape: tuple, modules: list | None, label: str) -> None:
        self.out.shapes[path] = shape
        self.out.modules[path] = modules
        self.out.labels[path] = label

    def seq(self, steps: list, path: str) -> list:
        layers: list = []
        i = 0
        while i < len(steps):
            s = steps[i]
            here = f"{path}[{len(layers)}]"
            if isinstance(s, Fork):
                layer, i = self.block(steps, i, here)
            else:
                layer, i = self.single(steps, i, here)
            layers.append(layer)
        return layers

    def single(self, steps: list, i: int, here: str) -> tuple[dict, int]:
        p = steps[i]
        layer, mods, labels, shape = _layer(p), list(p.modules), [p.label], p.shape
        i += 1
        if p.kind in OPS_WITH_EXTRAS:
            pos = 0
            while i < len(steps) and isinstance(steps[i], Prim) and steps[i].kind in EXTRA_KINDS:
                e = steps[i]
                j = self.out.order.index(e.kind)
                if j <= pos:
                    break
                layer[e.kind] = True if e.kind == "bn" else e.args["act"] if e.kind == "act" else e.args["p"]
                mods += e.modules
                labels.append(e.label)
                shape, pos, i = e.shape, j, i + 1
        self.note(here, shape, mods, " + ".join(labels))
        return layer, i

    def block(self, steps: list, i: int, here: str) -> tuple[dict, int]:
        f: Fork = steps[i]
        labels, shape = [f.merge.label], f.merge.shape
        i += 1
        extras: dict = {}
        for kind in ("act", "dropout"):
            if i < len(steps) and isinstance(steps[i], Prim) and steps[i].kind == kind:
                extras[kind] = steps[i].args["act" if kind == "act" else "p"]
                labels.append(steps[i].label)
                shape, i = steps[i].shape, i + 1
        paths = f.paths
        if f.merge.kind == "add" and len(paths) == 2 and any(_is_shortcut(p) for p in paths):
            body, short = (paths[1], paths[0]) if _is_shortcut(paths[0]) and not _is_shortcut(paths[1]) else paths
            layer = {"op": "residual", "body": self.seq(body, f"{here}.body"),
                     "shortcut": self.seq(short, f"{here}.shortcut") if short else "identity"}
        else:
            merge = "add" if f.merge.kind == "add" else "concat"
            layer = {"op": "branches", "merge": merge,
                     "paths": [self.seq(p, f"{here}.paths[{j}]") for j, p in enumerate(paths)]}
        layer.update(extras)
        self.note(here, shape, None, " + ".join(labels))
        return layer, i


def _is_shortcut(path: list) -> bool:
    """Empty (identity), or a 1x1 conv (with its BN)."""
    if not path:
        return True
    if not all(isinstance(s, Prim) for s in path):
        return False
    return (path[0].kind == "conv" and path[0].args["k"] == 1 and all(s.kind == "bn" for s in path[1:]))


def emit(steps: list) -> Emitted:
    steps = _fuse_separable(steps)
    e = _Emitter(choose_order(steps))
    e.out.layers = e.seq(steps, "model.layers")
    return e.out
