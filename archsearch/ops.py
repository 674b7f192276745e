"""The registry of layer kinds: the grammar of a model spec, documented once, here.

A model (``conf/model/NAME.yaml``) is an ordered list of layers; each layer is a
mapping with an ``op`` key naming one entry of :data:`OPS` plus that op's fields:

=========  ====================================================================
op         fields (default)                       what it is
=========  ====================================================================
conv       out, k (3), s (1), p (d*(k-1)//2),     Conv2d. ``groups`` must divide in and out
           d (1), groups (1), bias (false)        channels. Default padding keeps the size
                                                  at stride 1.
sepconv    out, k (3), s (1), p (d*(k-1)//2),     depthwise k x k conv (dilation d, stride s,
           d (1), bias (false)                    no bias) then pointwise 1 x 1 conv to
                                                  ``out`` (``bias`` applies to the pointwise)
maxpool    k (2), s (k), p (0)                    MaxPool2d; exists so a budget can forbid it
gap        (none)                                 global average pooling to (C, 1, 1)
linear     out, bias (true)                       fully connected; needs a (C, 1, 1) input,
                                                  i.e. comes after ``gap``
=========  ====================================================================

Per-layer extras, accepted by ``conv``, ``sepconv`` and ``linear``:

- ``bn`` (bool): BatchNorm2d over the layer's output channels,
- ``act``: one of :data:`ACTIVATIONS` (``none`` for no activation),
- ``dropout`` (float in [0, 1)): Dropout probability; 0 means no Dropout module.

``conv`` and ``sepconv`` take the model's ``layer_defaults`` for any extra they do
not set; ``linear`` does not (a classifier gets no bn/act/dropout unless asked).
The order of op and extras inside a layer is the model's ``order``, e.g.
``[op, act, dropout, bn]`` (the reference's) or ``[op, bn, act, dropout]``.

Adding a layer kind is one :class:`OpDef` entry below: its fields, its shape /
params / MACs / receptive-field rule (pure Python) and its build rule (which imports
torch lazily, so analysis never does).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = ["ACTIVATIONS", "EXTRAS", "OPS", "FieldDef", "OpDef", "Shape", "Step"]

Shape = tuple  # (C, H, W)

REQUIRED = object()

# name -> torch.nn class name (resolved lazily in build)
ACTIVATIONS: dict[str, str | None] = {
    "relu": "ReLU",
    "relu6": "ReLU6",
    "leaky_relu": "LeakyReLU",
    "gelu": "GELU",
    "silu": "SiLU",
    "mish": "Mish",
    "none": None,
}

EXTRAS = ("bn", "act", "dropout")


@dataclass(frozen=True)
class FieldDef:
    """One field of a layer: its kind ("pos_int", "nonneg_int", "bool") and default."""

    kind: str
    default: Any = REQUIRED
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


class Step(NamedTuple):
    """What one layer does, as the analysis needs it (computed by an op's rule)."""

    out: Shape
    params: int
    macs: int
    k_eff: int = 1  # effective kernel along one axis: d*(k-1)+1 (1 = no RF growth)
    stride: int = 1
    spatial: bool = True  # False once the map is pooled to a vector (gap, linear)


class OpError(ValueError):
    """A shape/channel problem found by an op's rule; ``field`` names the culprit."""

    def __init__(self, field_name: str | None, message: str):
        super().__init__(message)
        self.field = field_name
        self.message = message


@dataclass(frozen=True)
class OpDef:
    name: str
    doc: str
    fields: dict[str, FieldDef]
    analyze: Callable[[dict, Shape], Step]
    build: Callable[[dict, int], list]  # (args, in_channels) -> torch modules (op part only)
    extras: bool = False  # accepts bn / act / dropout
    takes_defaults: bool = False  # fills unset extras from the model's layer_defaults


def _spatial_out(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _pad(a: dict) -> int:
    return a["p"] if a.get("p") is not None else a["d"] * (a["k"] - 1) // 2


def _conv_geometry(a: dict, shape: Shape) -> tuple[int, int, int, int]:
    c, h, w = shape
    p = _pad(a)
    ho = _spatial_out(h, a["k"], a["s"], p, a["d"])
    wo = _spatial_out(w, a["k"], a["s"], p, a["d"])
    if ho <= 0 or wo <= 0:
        raise OpError(
            None,
            f"spatial size collapses to {max(ho, 0)}x{max(wo, 0)} (input {h}x{w}, effective kernel "
            f"{a['d'] * (a['k'] - 1) + 1}, stride {a['s']}, padding {p})",
        )
    return c, ho, wo, p



# ---------------------------------------------------------------- conv
def _conv_analyze(a: dict, shape: Shape) -> Step:
    cin, ho, wo, _ = _conv_geometry(a, shape)
    g = a["groups"]
    if cin % g:
        raise OpError("groups", f"groups {g} does not divide the input channels {cin}")
    if a["out"] % g:
        raise OpError("groups", f"groups {g} does not divide out {a['out']}")
    w = (cin // g) * a["k"] * a["k"] * a["out"]
    params = w + (a["out"] if a["bias"] else 0)
    return Step((a["out"], ho, wo), params, w * ho * wo, a["d"] * (a["k"] - 1) + 1, a["s"])


def _conv_build(a: dict, cin: int) -> list:
    from torch import nn

    return [
        nn.Conv2d(cin, a["out"], a["k"], a["s"], _pad(a), a["d"], a["groups"], a["bias"])
    ]


# ---------------------------------------------------------------- sepconv
def _sep_analyze(a: dict, shape: Shape) -> Step:
    cin, ho, wo, _ = _conv_geometry(a, shape)
    dw = cin * a["k"] * a["k"]
    pw = cin * a["out"]
    params = dw + pw + (a["out"] if a["bias"] else 0)
    return Step((a["out"], ho, wo), params, (dw + pw) * ho * wo, a["d"] * (a["k"] - 1) + 1, a["s"])


def _sep_build(a: dict, cin: int) -> list:
    from torch import nn

    return [
        nn.Conv2d(cin, cin, a["k"], a["s"], _pad(a), a["d"], groups=cin, bias=False),
        nn.Conv2d(cin, a["out"], 1, bias=a["bias"]),
    ]


# ---------------------------------------------------------------- maxpool
def _pool_args(a: dict) -> dict:
    return {"k": a["k"], "s": a["s"] if a["s"] is not None else a["k"], "p": a["p"], "d": 1}


def _maxpool_analyze(a: dict, shape: Shape) -> Step:
    g = _pool_args(a)
    c, ho, wo, _ = _conv_geometry(g, shape)
    return Step((c, ho, wo), 0, 0, g["k"], g["s"])


def _maxpool_build(a: dict, cin: int) -> list:
    from torch import nn

    g = _pool_args(a)
    return [nn.MaxPool2d(g["k"], g["s"], g["p"])]


# ---------------------------------------------------------------- gap
def _gap_analyze(a: dict, shape: Shape) -> Step:
    c, h, w = shape
    return Step((c, 1, 1), 0, 0, spatial=False)


def _gap_build(a: dict, cin: int) -> list:
    from torch import nn

    return [nn.AdaptiveAvgPool2d(1)]


# ---------------------------------------------------------------- linear
def _linear_analyze(a: dict, shape: Shape) -> Step:
    c, h, w = shape
    if (h, w) != (1, 1):
        raise OpError(None, f"linear needs a (C, 1, 1) input, got {c}x{h}x{w}; put gap before it")
    params = c * a["out"] + (a["out"] if a["bias"] else 0)
    return Step((a["out"], 1, 1), params, c * a["out"], spatial=False)


def _linear_build(a: dict, cin: int) -> list:
    from torch import nn

    # 1x1 conv == Linear on a (C,1,1) map, and keeps the tensor 4-D so bn/act/dropout
    # and channels_last work unchanged; parameter count equals nn.Linear's.
    return [nn.Conv2d(cin, a["out"], 1, bias=a["bias"])]


_KERNEL = {
    "k": FieldDef("pos_int", 3, "kernel size"),
    "s": FieldDef("pos_int", 1, "stride"),
    "p": FieldDef("nonneg_int", None, "padding (default d*(k-1)//2)"),
    "d": FieldDef("pos_int", 1, "dilation"),
}

OPS: dict[str, OpDef] = {
    "conv": OpDef(
        "conv",
        "2-D convolution",
        {
            "out": FieldDef("pos_int", doc="output channels"),
            **_KERNEL,
            "groups": FieldDef("pos_int", 1, "channel groups"),
            "bias": FieldDef("bool", False),
        },
        _conv_analyze,
        _conv_build,
        extras=True,
        takes_defaults=True,
    ),
    "sepconv": OpDef(
        "sepconv",
        "depthwise k x k (dilation d) then pointwise 1 x 1",
        {"out": FieldDef("pos_int", doc="output channels"), **_KERNEL, "bias": FieldDef("bool", False)},
        _sep_analyze,
        _sep_build,
        extras=True,
        takes_defaults=True,
    ),
    "maxpool": OpDef(
        "maxpool",
        "max pooling (forbidden by the default budget)",
        {
            "k": FieldDef("pos_int", 2),
            "s": FieldDef("pos_int", None, "stride (default k)"),
            "p": FieldDef("nonneg_int", 0),
        },
        _maxpool_analyze,
        _maxpool_build,
    ),
    "gap": OpDef("gap", "global average pooling", {}, _gap_analyze, _gap_build),
    "linear": OpDef(
        "linear",
        "fully connected layer after gap",
        {"out": FieldDef("pos_int", doc="output features"), "bias": FieldDef("bool", True)},
        _linear_analyze,
        _linear_build,
        extras=True,
    ),
}
