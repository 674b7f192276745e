"""Shapes, parameters, MACs and receptive field of a :class:`ModelSpec`, without building it.

Receptive field (per axis), with effective kernel ``k_eff = d*(k-1)+1``::

    rf_out   = rf_in + (k_eff - 1) * jump_in
    jump_out = jump_in * s
    out      = floor((in + 2p - d*(k-1) - 1) / s) + 1

The model's RF is the RF of the **last spatial feature map before global pooling**
(counting GAP as covering the whole image would let every network pass).
Parameters include BatchNorm's weight and bias (2 per channel) as torch counts them;
MACs count conv / linear multiply-accumulates (BN, activations and pooling excluded).
Pure Python: no torch import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from .ops import OPS, OpError
from .spec import LayerSpec, ModelSpec, SpecError

__all__ = ["LayerReport", "Report", "analyze", "receptive_field"]


class LayerReport(NamedTuple):
    index: int
    path: str
    op: str
    layer: LayerSpec
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    params: int
    macs: int
    rf: int  # receptive field of this layer's output (per axis, pixels of the input)
    jump: int  # distance in input pixels between adjacent outputs (cumulative stride)
    spatial: bool  # False once pooled to a vector

    @property
    def desc(self) -> str:
        """Kernel, dilation, stride, padding, extras, e.g. ``3x3 d2 p2 | relu,drop0.05,bn``."""
        return self.layer.describe()

    def to_dict(self) -> dict:
        return {
            "index": self.index, "path": self.path, "op": self.op, "desc": self.desc,
            "in_shape": list(self.in_shape), "out_shape": list(self.out_shape),
            "params": self.params, "macs": self.macs, "rf": self.rf, "jump": self.jump,
            "spatial": self.spatial,
        }


@dataclass(frozen=True)
class Report:
    spec: ModelSpec
    layers: tuple[LayerReport, ...]
    params: int
    macs: int
    rf: int  # RF of the last spatial map before global pooling
    out_shape: tuple[int, int, int]

    @property
    def n_maxpool(self) -> int:
        return sum(1 for l in self.spec.layers if l.op == "maxpool")

    @property
    def n_separable(self) -> int:
        """sepconv layers, plus convs that are depthwise (groups == in channels > 1)."""
        n = 0
        for l, r in zip(self.spec.layers, self.layers):
            if l.op == "sepconv" or (l.op == "conv" and l.args["groups"] > 1 and l.args["groups"] == r.in_shape[0]):
                n += 1
        return n

    @property
    def n_dilated(self) -> int:
        return sum(1 for l in self.spec.layers if l.op in ("conv", "sepconv") and l.args["d"] > 1)

    @property
    def has_gap(self) -> bool:
        return any(l.op == "gap" for l in self.spec.layers)

    def to_dict(self) -> dict:
        return {
            "model": self.spec.name,
            "input_shape": list(self.spec.input_shape),
            "num_classes": self.spec.num_classes,
            "params": self.params,
            "macs": self.macs,
            "rf": self.rf,
            "out_shape": list(self.out_shape),
            "layers": [l.to_dict() for l in self.layers],
        }


def analyze(spec: ModelSpec) -> Report:
    """Walk the layers; raise :class:`SpecError` (with the layer's path) on impossible shapes."""
    shape = spec.input_shape
    rf, jump, spatial = 1, 1, True
    rf_before_pool = None
    total_p = total_m = 0
    out = []
    for layer in spec.layers:
        od = OPS[layer.op]
        try:
            step = od.analyze(layer.args, shape)
        except OpError as e:
            raise SpecError(f"{layer.path}.{e.field}" if e.field else layer.path, e.message) from None
        params = step.params + (2 * step.out[0] if layer.bn else 0)
        if spatial and not step.spatial:
            rf_before_pool = rf
        if step.spatial and spatial:
            rf += (step.k_eff - 1) * jump
            jump *= step.stride
        spatial = spatial and step.spatial
        out.append(LayerReport(layer.index, layer.path, layer.op, layer, shape, step.out,
                               params, step.macs, rf, jump, spatial))
        total_p += params
        total_m += step.macs
        shape = step.out
    if shape[1:] != (1, 1):
        c, h, w = shape
        raise SpecError(
            f"model.layers[{len(spec.layers) - 1}]",
            f"the model ends with a {c}x{h}x{w} map, not a vector of class scores; "
            "end with gap (global average pooling) or reduce the map to 1x1",
        )
    if shape[0] != spec.num_classes:
        with_out = [l for l in spec.layers if "out" in l.args]
        where = f"{with_out[-1].path}.out" if with_out else spec.layers[-1].path
        raise SpecError(where, f"the model outputs {shape[0]} classes but model.num_classes is {spec.num_classes}")
    model_rf = rf_before_pool if rf_before_pool is not None else rf
    return Report(spec, tuple(out), total_p, total_m, model_rf, shape)


def receptive_field(spec: ModelSpec) -> int:
    return analyze(spec).rf
