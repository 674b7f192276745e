"""The registry of layer kinds: the grammar of a model spec, documented once, here.

A model (``conf/model/NAME.yaml``) is an ordered list of layers; each layer is a
mapping with an ``op`` key naming one entry of :data:`OPS` plus that op's fields:

===========  ==================================  =============================================
op           fields (default)                    what it is
===========  ==================================  =============================================
conv         out, k (3), s (1), p (d*(k-1)//2),  Conv2d. ``groups`` must divide in and out
             d (1), groups (1), bias (false),    channels. The default padding d*(k-1)//2
             padding_mode (zeros)                keeps the size for an odd effective kernel
                                                 d*(k-1)+1 at stride 1 (an even one loses 1)
sepconv      out, k (3), s (1), p (d*(k-1)//2),  depthwise k x k conv (dilation d, stride s,
             d (1), bias (false),                no bias) then pointwise 1 x 1 conv to
             padding_mode (zeros)                ``out`` (``bias`` applies to the pointwise)
maxpool      k (2), s (k), p (0)                 MaxPool2d; exists so a budget can forbid it
avgpool      k (2), s (k), p (0)                 AvgPool2d (local average pooling)
gap          (none)                              global average pooling to (C, 1, 1)
linear       out, bias (true)                    fully connected; needs a (C, 1, 1) input,
                                                 i.e. comes after ``gap``
bn           (none)                              BatchNorm2d over the current channels (also
                                                 on the (C, 1, 1) vector after gap)
act          act                                 one of :data:`ACTIVATIONS` but ``none``
dropout      p                                   Dropout (element-wise), 0 <= p < 1
dropout2d    p                                   Dropout2d (whole channels), 0 <= p < 1
log_softmax  (none)                              log_softmax over the classes; needs a (C, 1, 1)
                                                 input (after gap or linear)
===========  ==================================  =============================================

``padding_mode`` is torch's: ``zeros``, ``reflect``, ``replicate`` or ``circular`` (shapes and
parameters do not depend on it). A pooling layer (maxpool or avgpool) whose output is 1 x 1 is
global pooling: like ``gap``, it ends the spatial part of the model (the model's receptive field
is that of its input map).

Per-layer extras, accepted by ``conv``, ``sepconv`` and ``linear``:

- ``bn`` (bool): BatchNorm2d over the layer's output channels,
- ``act``: one of :data:`ACTIVATIONS` (``none`` for no activation),
- ``dropout`` (float in [0, 1)): Dropout probability; 0 means no Dropout module.

``conv`` and ``sepconv`` take the model's ``layer_defaults`` for any extra they do
not set; ``linear`` does not (a classifier gets no bn/act/dropout unless asked).
The order of op and extras inside a layer is the model's ``order``, e.g.
``[op, act, dropout, bn]`` (the reference's) or ``[op, bn, act, dropout]``. An order the
extras cannot say (conv -> maxpool -> bn -> relu) is written with the standalone layers
``bn``, ``act``, ``dropout``, ``dropout2d``, the conv's own extras off.

A depthwise-separable conv with a bias on its depthwise half, or bn/act between its two
convs, is written as ``conv`` with ``groups`` equal to its input channels, then (bn, act,
dropout layers between are fine) a ``conv`` with ``k: 1``; the budget counts that pair as
one separable layer, as it counts a ``sepconv``.

Adding a layer kind is one :class:`OpDef` entry below: its fields, its shape /
params / MACs / receptive-field rule (pure Python) and its build rule (which imports
torch lazily, so analysis never does).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from archsearch.errors import OpError

__all__ = ["ACTIVATIONS", "EXTRAS", "OPS", "PADDING_MODES", "PASS_THROUGH", "FieldDef", "OpDef", "Shape", "Step",
           "is_global_pool"]

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

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")  # torch.nn.Conv2d's padding_mode

# standalone layers that keep the shape and the receptive field (a separable pair may have them between its convs)
PASS_THROUGH = ("bn", "act", "dropout", "dropout2d")


@dataclass(frozen=True)
class FieldDef:
    """One field of a layer: its kind ("pos_int", "nonneg_int", "bool", "choice", "dropout",
    "layer_act"), its default, and for "choice" the valid values. ``implicit``: a field added
    after specs were first hashed, left out of the spec's plain data at its default, so a spec
    that does not use it keeps its hash (checkpoints and caches stay valid)."""

    kind: str
    default: Any = REQUIRED
    doc: str = ""
    choices: tuple = ()
    implicit: bool = False

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
    spatial: bool = True  # False once the map is pooled to a vector (gap, a pool to 1x1, linear)


@dataclass(frozen=True)
class OpDef:
    name: str
    doc: str
    fields: dict[str, FieldDef]
    analyze: Callable[[dict, Shape], Step]
    build: Callable[[dict, int], list]  # (args, in_channels) -> torch modules (op part only)
    extras: bool = False  # accepts bn / act / dropout
    takes_defaults: bool = False  # fills unset extras from the model's layer_defaults


def _pad(a: dict) -> int:
    return a["p"] if a.get("p") is not None else a["d"] * (a["k"] - 1) // 2


# Step(...) runs a Python-level __new__; the conv rules, which the validator calls once per conv,
# build the tuple directly (as namedtuple's own _make does), every field given.
_new = tuple.__new__


def _conv_geometry(a: dict, shape: Shape) -> tuple[int, int, int, int]:
    """(in channels, out height, out width, effective kernel): out = (in + 2p - d(k-1) - 1) // s + 1.
    Runs once per conv in the validator's loop, hence written out flat."""
    c, h, w = shape
    k, d, s = a["k"], a["d"], a["s"]
    k_eff = d * (k - 1) + 1
    p = a.get("p")
    if p is None:
        p = (k_eff - 1) // 2
    ho = (h + 2 * p - k_eff) // s + 1
    wo = (w + 2 * p - k_eff) // s + 1
    if ho <= 0 or wo <= 0:
        raise OpError(
            None,
            f"spatial size collapses to {max(ho, 0)}x{max(wo, 0)} (input {h}x{w}, effective kernel "
            f"{k_eff}, stride {s}, padding {p})",
        )
    mode = a.get("padding_mode", "zeros")
    if mode != "zeros" and p and (p >= min(h, w) if mode == "reflect" else mode == "circular" and p > min(h, w)):
        raise OpError("padding_mode", f"{mode} padding {p} needs a larger input than {h}x{w} (torch: reflect "
                                      "pads less than the size, circular at most the size); use zeros or replicate")
    return c, ho, wo, k_eff


# ---------------------------------------------------------------- conv
def _conv_analyze(a: dict, shape: Shape) -> Step:
    cin, ho, wo, k_eff = _conv_geometry(a, shape)
    g, out, k = a["groups"], a["out"], a["k"]
    if cin % g:
        raise OpError("groups", f"groups {g} does not divide the input channels {cin}")
    if out % g:
        raise OpError("groups", f"groups {g} does not divide out {out}")
    w = (cin // g) * k * k * out
    return _new(Step, ((out, ho, wo), w + out if a["bias"] else w, w * ho * wo, k_eff, a["s"], True))


def _conv_build(a: dict, cin: int) -> list:
    from torch import nn  # only to build: analysing a spec never imports torch

    return [nn.Conv2d(cin, a["out"], a["k"], a["s"], _pad(a), a["d"], a["groups"], a["bias"],
                      padding_mode=a.get("padding_mode", "zeros"))]


# ---------------------------------------------------------------- sepconv
def _sep_analyze(a: dict, shape: Shape) -> Step:
    cin, ho, wo, k_eff = _conv_geometry(a, shape)
    k, out = a["k"], a["out"]
    w = cin * k * k + cin * out  # depthwise + pointwise
    return _new(Step, ((out, ho, wo), w + out if a["bias"] else w, w * ho * wo, k_eff, a["s"], True))


def _sep_build(a: dict, cin: int) -> list:
    from torch import nn  # only to build: analysing a spec never imports torch

    return [
        nn.Conv2d(cin, cin, a["k"], a["s"], _pad(a), a["d"], groups=cin, bias=False,
                  padding_mode=a.get("padding_mode", "zeros")),
        nn.Conv2d(cin, a["out"], 1, bias=a["bias"]),
    ]


# ---------------------------------------------------------------- maxpool, avgpool
def _pool_args(a: dict) -> dict:
    return {"k": a["k"], "s": a["s"] if a["s"] is not None else a["k"], "p": a["p"], "d": 1}


def is_global_pool(op: str, out: Shape) -> bool:
    """A pooling layer whose output is 1x1 pools the whole map, whatever its class."""
    return op in ("maxpool", "avgpool") and tuple(out[1:]) == (1, 1)


def _pool_analyze(a: dict, shape: Shape) -> Step:
    g = _pool_args(a)
    if 2 * g["p"] > g["k"]:
        raise OpError("p", f"padding {g['p']} is more than half the kernel {g['k']} (torch allows at most k//2)")
    c, ho, wo, k_eff = _conv_geometry(g, shape)
    if (ho, wo) == (1, 1):  # global pooling: the spatial part of the model ends here
        return Step((c, 1, 1), 0, 0, spatial=False)
    return Step((c, ho, wo), 0, 0, k_eff, g["s"])


def _maxpool_build(a: dict, cin: int) -> list:
    from torch import nn  # only to build: analysing a spec never imports torch

    g = _pool_args(a)
    return [nn.MaxPool2d(g["k"], g["s"], g["p"])]


def _avgpool_build(a: dict, cin: int) -> list:
    from torch import nn  # only to build: analysing a spec never imports torch

    g = _pool_args(a)
    return [nn.AvgPool2d(g["k"], g["s"], g["p"])]


# ---------------------------------------------------------------- gap
def _gap_analyze(a: dict, shape: Shape) -> Step:
    c, h, w = shape
    return Step((c, 1, 1), 0, 0, spatial=False)


def _gap_build(a: dict, cin: int) -> list:
    from torch import nn  # only to build: analysing a spec never imports torch

    return [nn.AdaptiveAvgPool2d(1)]


# ---------------------------------------------------------------- linear, log_softmax
def _vector_input(op: str, shape: Shape, fix: str) -> None:
    c, h, w = shape
    if (h, w) != (1, 1):
        raise OpError(None, f"{op} needs a (C, 1, 1) input, got {c}x{h}x{w}; {fix}")


def _linear_analyze(a: dict, shape: Shape) -> Step:
    _vector_input("linear", shape, "put gap before it")
    c = shape[0]
    params = c * a["out"] + (a["out"] if a["bias"] else 0)
    return Step((a["out"], 1, 1), params, c * a["out"], spatial=False)


def _linear_build(a: dict, cin: int) -> list:
    from torch import nn  # only to build: analysing a spec never imports torch

    # 1x1 conv == Linear on a (C,1,1) map, and keeps the tensor 4-D so bn/act/dropout
    # and channels_last work unchanged; parameter count equals nn.Linear's.
    return [nn.Conv2d(cin, a["out"], 1, bias=a["bias"])]


def _log_softmax_analyze(a: dict, shape: Shape) -> Step:
    _vector_input("log_softmax", shape, "it goes at the end of the head, after gap or linear")
    return Step(tuple(shape), 0, 0, spatial=False)


def _log_softmax_build(a: dict, cin: int) -> list:
    from torch import nn  # only to build: analysing a spec never imports torch

    return [nn.LogSoftmax(dim=1)]  # over the classes of the (N, C, 1, 1) map


# ---------------------------------------------------------------- standalone bn, act, dropout
def _same_analyze(a: dict, shape: Shape) -> Step:
    return Step(tuple(shape), 0, 0)


def _bn_analyze(a: dict, shape: Shape) -> Step:
    return Step(tuple(shape), 2 * shape[0], 0)


def _bn_build(a: dict, cin: int) -> list:
    from torch import nn  # only to build: analysing a spec never imports torch

    return [nn.BatchNorm2d(cin)]  # on a (C, 1, 1) vector too: BatchNorm over the channels


def _act_build(a: dict, cin: int) -> list:
    from torch import nn  # only to build: analysing a spec never imports torch

    return [getattr(nn, ACTIVATIONS[a["act"]])()]


def _dropout_build(a: dict, cin: int) -> list:
    from torch import nn  # only to build: analysing a spec never imports torch

    return [nn.Dropout(a["p"])]


def _dropout2d_build(a: dict, cin: int) -> list:
    from torch import nn  # only to build: analysing a spec never imports torch

    return [nn.Dropout2d(a["p"])]


_KERNEL = {
    "k": FieldDef("pos_int", 3, "kernel size"),
    "s": FieldDef("pos_int", 1, "stride"),
    "p": FieldDef("nonneg_int", None, "padding (default d*(k-1)//2)"),
    "d": FieldDef("pos_int", 1, "dilation"),
}
_PADDING_MODE = FieldDef("choice", "zeros", "torch's padding_mode", PADDING_MODES, implicit=True)
_POOL = {
    "k": FieldDef("pos_int", 2),
    "s": FieldDef("pos_int", None, "stride (default k)"),
    "p": FieldDef("nonneg_int", 0),
}
_P = {"p": FieldDef("dropout", doc="drop probability, 0 <= p < 1")}

OPS: dict[str, OpDef] = {
    "conv": OpDef(
        "conv",
        "2-D convolution",
        {
            "out": FieldDef("pos_int", doc="output channels"),
            **_KERNEL,
            "groups": FieldDef("pos_int", 1, "channel groups"),
            "bias": FieldDef("bool", False),
            "padding_mode": _PADDING_MODE,
        },
        _conv_analyze,
        _conv_build,
        extras=True,
        takes_defaults=True,
    ),
    "sepconv": OpDef(
        "sepconv",
        "depthwise k x k (dilation d) then pointwise 1 x 1",
        {"out": FieldDef("pos_int", doc="output channels"), **_KERNEL, "bias": FieldDef("bool", False),
         "padding_mode": _PADDING_MODE},
        _sep_analyze,
        _sep_build,
        extras=True,
        takes_defaults=True,
    ),
    "maxpool": OpDef("maxpool", "max pooling (forbidden by the default budget)", _POOL, _pool_analyze, _maxpool_build),
    "gap": OpDef("gap", "global average pooling", {}, _gap_analyze, _gap_build),
    "linear": OpDef(
        "linear",
        "fully connected layer after gap",
        {"out": FieldDef("pos_int", doc="output features"), "bias": FieldDef("bool", True)},
        _linear_analyze,
        _linear_build,
        extras=True,
    ),
    "avgpool": OpDef("avgpool", "local average pooling", _POOL, _pool_analyze, _avgpool_build),
    "bn": OpDef("bn", "BatchNorm2d over the current channels", {}, _bn_analyze, _bn_build),
    "act": OpDef("act", "an activation", {"act": FieldDef("layer_act", doc="the activation")}, _same_analyze,
                 _act_build),
    "dropout": OpDef("dropout", "element-wise Dropout", _P, _same_analyze, _dropout_build),
    "dropout2d": OpDef("dropout2d", "channel Dropout2d", _P, _same_analyze, _dropout2d_build),
    "log_softmax": OpDef("log_softmax", "log_softmax over the classes", {}, _log_softmax_analyze, _log_softmax_build),
}
