"""Shapes, parameters, MACs and receptive field of a :class:`ModelSpec`, without building it.

Receptive field (per axis), with effective kernel ``k_eff = d*(k-1)+1``::

    rf_out   = rf_in + (k_eff - 1) * jump_in
    jump_out = jump_in * s
    out      = floor((in + 2p - d*(k-1) - 1) / s) + 1

The model's RF is the RF of the **last spatial feature map before global pooling**
(counting GAP as covering the whole image would let every network pass). A maxpool or
avgpool whose output is 1x1 is global pooling too.

Blocks (residual, branches) run their paths from the same input; where the paths merge
they must agree on H, W (``add``: and C) and on their jump; the merged map's RF is the
**maximum** over the paths (a shortcut is a path; identity leaves the RF as it was);
params and MACs add up over the paths.
Parameters include BatchNorm's weight and bias (2 per channel) as torch counts them;
MACs count conv / linear multiply-accumulates (BN, activations and pooling excluded).
Pure Python: no torch import.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

from archsearch.errors import OpError, SpecError
from archsearch.grammar.layers import BlockSpec, LayerSpec, walk
from archsearch.grammar.ops import OPS, PASS_THROUGH
from archsearch.grammar.spec import ModelSpec

__all__ = ["LayerAnalysis", "Analysis", "analyze", "receptive_field"]


class LayerAnalysis(NamedTuple):
    index: int
    path: str
    op: str
    layer: LayerSpec | BlockSpec
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    params: int  # a block's: the sum over its paths
    macs: int
    rf: int  # receptive field of this layer's output (per axis, pixels of the input)
    jump: int  # distance in input pixels between adjacent outputs (cumulative stride)
    spatial: bool  # False once pooled to a vector
    depth: int = 0  # nesting level (0: an entry of the model's layer list)
    children: tuple = ()  # a block's rows, one tuple per path
    is_block: bool = False

    def describe(self, order: tuple[str, ...]) -> str:
        """Kernel, dilation, stride, padding, extras in the model's ``order``, e.g. ``3x3 d2 p2 | relu,drop0.05,bn``."""
        return self.layer.describe(order)

    def to_dict(self, order: tuple[str, ...]) -> dict:
        d = {
            "index": self.index, "path": self.path, "op": self.op, "desc": self.describe(order),
            "in_shape": list(self.in_shape), "out_shape": list(self.out_shape),
            "params": self.params, "macs": self.macs, "rf": self.rf, "jump": self.jump,
            "spatial": self.spatial,
        }
        if self.is_block:
            d["merge"] = self.layer.merge
            d["paths"] = [[r.to_dict(order) for r in p] for p in self.children]
        return d


@dataclass(frozen=True)
class Analysis:
    spec: ModelSpec
    layers: tuple[LayerAnalysis, ...]  # every row, blocks and their insides, in reading order
    params: int
    macs: int
    rf: int  # RF of the last spatial map before global pooling
    out_shape: tuple[int, int, int]
    top: tuple[LayerAnalysis, ...] = ()  # the rows of the model's own list (blocks hold their children)
    leaves: tuple[LayerAnalysis, ...] = ()  # the rows of layers (not blocks), inside blocks too: what the rules see

    @cached_property
    def _counts(self) -> tuple[int, int, int, int]:
        """(maxpool, separable, dilated, gap) layers, counted in one pass (the budget check reads all four).
        Global average pooling is ``gap`` or an avgpool whose output is 1x1 (a global maxpool is not)."""
        maxpool = dilated = gap = 0
        for r in self.leaves:
            op = r.op
            if op == "conv" or op == "sepconv":
                if r.layer.args["d"] > 1:
                    dilated += 1
            elif op == "maxpool":
                maxpool += 1
            elif op == "gap" or (op == "avgpool" and r.out_shape[1:] == (1, 1)):
                gap += 1
        depthwise = {id(r.layer) for r in self.leaves if r.op == "conv" and 1 < r.layer.args["groups"] == r.in_shape[0]}
        return maxpool, _separable(self.spec.layers, depthwise, False)[0], dilated, gap

    @property
    def n_maxpool(self) -> int:
        return self._counts[0]

    @property
    def n_separable(self) -> int:
        """sepconv layers, plus depthwise convs (groups == in channels > 1) whose output a 1x1 conv
        takes (standalone bn / act / dropout layers between them allowed)."""
        return self._counts[1]

    @property
    def n_dilated(self) -> int:
        return self._counts[2]

    @property
    def has_gap(self) -> bool:
        return self._counts[3] > 0

    def to_dict(self) -> dict:
        return {
            "model": self.spec.name,
            "input_shape": list(self.spec.input_shape),
            "num_classes": self.spec.num_classes,
            "params": self.params,
            "macs": self.macs,
            "rf": self.rf,
            "out_shape": list(self.out_shape),
            "layers": [l.to_dict(self.spec.order) for l in (self.top or self.layers)],
        }


def _separable(nodes, depthwise: set[str], pending: bool) -> tuple[int, bool]:
    """(separable layers in ``nodes``, whether their output is still a depthwise conv's waiting for
    its pointwise 1x1) when the input is one (``pending``). A depthwise conv is followed, in the
    data's flow, by a 1x1 conv: standalone bn, act and dropout layers may sit between; a block's
    output is pending if one of its paths' is (an identity path passes its input's on)."""
    count = 0
    for n in nodes:
        if isinstance(n, BlockSpec):
            ends = []
            for p in n.paths:
                c, end = _separable(p, depthwise, pending)
                count += c
                ends.append(end)
            pending = any(ends)
        elif n.op == "sepconv":
            count, pending = count + 1, False
        elif n.op == "conv":
            if pending and n.args["k"] == 1:
                count += 1
            pending = id(n) in depthwise
        elif n.op not in PASS_THROUGH:
            pending = False
    return count, pending


# LayerAnalysis(...) runs a Python-level __new__; building the tuple directly (as namedtuple's own
# _make does) takes a third of the time, and the validator makes one row per layer. Every field is given.
_new = tuple.__new__


class _State(NamedTuple):
    shape: tuple[int, int, int]
    rf: int
    jump: int
    spatial: bool
    rf_before_pool: int | None


def _shortcut_hint(block: BlockSpec, shape_in: tuple[int, int, int], body: tuple[int, int, int]) -> str:
    """For a residual whose body and shortcut disagree: the 1x1 conv shortcut that maps the block's
    input to the body's shape, as YAML (empty if no 1x1 conv does)."""
    if block.op != "residual":
        return ""
    s = max(1, shape_in[1] // body[1])
    if ((shape_in[1] - 1) // s + 1, (shape_in[2] - 1) // s + 1) != body[1:]:
        return ""
    return f"; use shortcut: [{{op: conv, out: {body[0]}, k: 1" + (f", s: {s}}}]" if s > 1 else "}]")


def _merge(block: BlockSpec, ends: list[_State], shape_in: tuple[int, int, int]) -> tuple[int, int, int]:
    """The merged map's shape; paths that cannot merge -> SpecError naming the block and both shapes."""
    names = block.path_names
    first = ends[0]
    for name, e in zip(names[1:], ends[1:]):
        if not (first.spatial and e.spatial):
            raise SpecError(block.path, "gap, linear and global pooling cannot sit inside a block: its paths must "
                                        "end in spatial maps")
        same = first.shape == e.shape if block.merge == "add" else first.shape[1:] == e.shape[1:]
        if not same:
            a, b = "x".join(map(str, first.shape)), "x".join(map(str, e.shape))
            need = "C, H and W" if block.merge == "add" else "H and W"
            raise SpecError(block.path, f"{block.merge} needs the same {need} on every path: {names[0]} gives {a}, "
                                        f"{name} gives {b}" + _shortcut_hint(block, shape_in, first.shape))
        if e.jump != first.jump:
            raise SpecError(block.path, f"the paths stride differently ({names[0]} jump {first.jump}, {name} jump "
                                        f"{e.jump}); strides must agree where paths merge")
    c = sum(e.shape[0] for e in ends) if block.merge == "concat" else first.shape[0]
    return (c, *first.shape[1:])


def _analyze_block(block: BlockSpec, st: _State, depth: int) -> tuple[list[LayerAnalysis], _State]:
    if not st.spatial:
        raise SpecError(block.path, f"{block.op} needs a spatial input; it comes after global pooling here")
    below: list[LayerAnalysis] = []  # every row inside the block, in reading order
    kids, ends = [], []
    params = macs = 0
    for p in block.paths:
        rows, own, p_params, p_macs, end = _analyze_list(p, st, depth + 1)
        below += rows
        kids.append(own)
        ends.append(end)
        params += p_params
        macs += p_macs
    shape = _merge(block, ends, st.shape)
    rf, jump = max(e.rf for e in ends), ends[0].jump
    row = LayerAnalysis(block.index, block.path, block.op, block, st.shape, shape, params, macs, rf, jump, True,
                      depth, tuple(kids), True)
    below.insert(0, row)
    return below, _State(shape, rf, jump, True, st.rf_before_pool)


def _analyze_list(nodes, st: _State, depth: int):
    """Rows of ``nodes`` from state ``st``: (every row, nested ones too; the rows of ``nodes`` themselves;
    their params; their MACs; the state after them). Plain layers are handled inline (the validator's
    speed is this loop's): one Step from the op's rule, one row."""
    rows: list[LayerAnalysis] = []
    own: list[LayerAnalysis] = []
    total_params = total_macs = 0
    shape, rf, jump, spatial, before = st
    for node in nodes:
        if isinstance(node, BlockSpec):
            more, (shape, rf, jump, spatial, before) = _analyze_block(node, _State(shape, rf, jump, spatial, before), depth)
            row = more[0]
            rows += more
        else:
            try:
                step = OPS[node.op].analyze(node.args, shape)
            except OpError as e:
                raise SpecError(f"{node.path}.{e.field}" if e.field else node.path, e.message) from None
            out, params, macs, k_eff, stride, step_spatial = step
            if node.bn:
                params += 2 * out[0]
            if spatial:
                if step_spatial:
                    rf += (k_eff - 1) * jump
                    jump *= stride
                else:
                    before, spatial = rf, False
            row = _new(LayerAnalysis, (node.index, node.where or node.path, node.op, node, shape, out, params, macs, rf,
                                     jump, spatial, depth, (), False))
            rows.append(row)
            shape = out
        own.append(row)
        total_params += row.params
        total_macs += row.macs
    return rows, tuple(own), total_params, total_macs, _State(shape, rf, jump, spatial, before)


def analyze(spec: ModelSpec) -> Analysis:
    """Walk the layers and blocks; raise :class:`SpecError` (with the YAML path) on impossible shapes."""
    rows, top, params, macs, end = _analyze_list(spec.layers, _State(spec.input_shape, 1, 1, True, None), 0)
    shape = end.shape
    if shape[1:] != (1, 1):
        c, h, w = shape
        raise SpecError(
            spec.layers[-1].path,
            f"the model ends with a {c}x{h}x{w} map, not a vector of class scores; "
            "end with gap (global average pooling) or reduce the map to 1x1",
        )
    if shape[0] != spec.num_classes:
        with_out = [l for l in walk(spec.layers) if "out" in l.args]
        where = f"{with_out[-1].path}.out" if with_out else spec.layers[-1].path
        raise SpecError(where, f"the model outputs {shape[0]} classes but model.num_classes is {spec.num_classes}")
    model_rf = end.rf_before_pool if end.rf_before_pool is not None else end.rf
    return Analysis(spec, tuple(rows), params, macs, model_rf, shape, top, tuple(r for r in rows if not r.is_block))


def receptive_field(spec: ModelSpec) -> int:
    return analyze(spec).rf
