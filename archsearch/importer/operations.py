"""What each torch operation a traced forward may call is in the grammar: ``(kind, settings)``,
or an :class:`ImportProblem` that names it, where it is called and why it cannot be written."""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import nn

from archsearch.importer.problems import ImportProblem

__all__ = ["convert_function", "convert_method", "convert_module"]

# torch.nn activation class -> the grammar's name (with the only settings the grammar builds)
_ACT_MODULES = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.LeakyReLU: "leaky_relu", nn.GELU: "gelu", nn.SiLU: "silu",
                nn.Mish: "mish"}
_ACT_FUNCTIONS = {F.relu: "relu", torch.relu: "relu", F.relu_: "relu", torch.relu_: "relu", F.relu6: "relu6",
                  F.leaky_relu: "leaky_relu", F.gelu: "gelu", F.silu: "silu", F.mish: "mish"}
SUPPORTED = ("Conv2d, BatchNorm2d, ReLU, ReLU6, LeakyReLU, GELU, SiLU, Mish, Dropout, Dropout2d, MaxPool2d, "
             "AvgPool2d, AdaptiveAvgPool2d(1), AdaptiveMaxPool2d(1), Linear, Flatten, Identity, LogSoftmax, "
             "x + y, torch.cat(dim=1), view/flatten after global pooling")


def _fail(what: str, where: str, why: str):
    raise ImportProblem(f"{what}{f' at {where}' if where else ''}: {why}")


def _square(what: str, where: str, name: str, v) -> int:
    if isinstance(v, (tuple, list)):
        if len(set(v)) != 1:
            _fail(what, where, f"{name} {tuple(v)} is not square; the grammar's layers are square")
        v = v[0]
    return int(v)


def _conv(m: nn.Conv2d, what: str, where: str) -> dict:
    k, s, d = (_square(what, where, n, getattr(m, a)) for n, a in
               (("kernel", "kernel_size"), ("stride", "stride"), ("dilation", "dilation")))
    if isinstance(m.padding, str):  # 'valid' or 'same' (stride 1)
        if m.padding == "same" and (d * (k - 1)) % 2:
            _fail(what, where, "padding='same' with an even effective kernel pads one side more; not writable")
        p = 0 if m.padding == "valid" else d * (k - 1) // 2
    else:
        p = _square(what, where, "padding", m.padding)
    return {"out": m.out_channels, "k": k, "s": s, "p": p, "d": d, "groups": m.groups, "bias": m.bias is not None,
            "padding_mode": m.padding_mode, "cin": m.in_channels}


def _pool(k, s, p, what, where, in_shape, shape, avg: bool) -> tuple[str, dict]:
    k = _square(what, where, "kernel", k)
    s = k if s is None or s == [] or s == () else _square(what, where, "stride", s)
    p = _square(what, where, "padding", p)
    if avg and shape[1:] == (1, 1) and p == 0 and in_shape[1:] == (k, k):
        return "gap", {}  # averages the whole map: global average pooling
    return ("avgpool" if avg else "maxpool"), {"k": k, "s": s, "p": p}


def _global(what, where, out, in_shape, avg: bool) -> tuple[str, dict]:
    if out not in (1, (1, 1), [1, 1]):
        _fail(what, where, f"adaptive pooling to {out}: only output size 1 (global pooling) is in the grammar")
    if avg:
        return "gap", {}
    if in_shape[1] != in_shape[2]:
        _fail(what, where, f"global max pooling of a non-square {in_shape[1]}x{in_shape[2]} map")
    return "maxpool", {"k": in_shape[1], "s": in_shape[1], "p": 0}


def convert_module(m: nn.Module, in_shape: tuple, shape: tuple, what: str, where: str) -> tuple[str, dict]:
    """The kind and settings of a call to module ``m``."""
    if type(m) is nn.Conv2d:
        return "conv", _conv(m, what, where)
    if type(m) is nn.BatchNorm2d:
        if not (m.affine and m.track_running_stats) or abs(m.eps - 1e-5) > 1e-12:
            _fail(what, where, "BatchNorm2d with eps 1e-5, affine weights and running statistics is the grammar's "
                               f"bn; this one has eps={m.eps}, affine={m.affine}, "
                               f"track_running_stats={m.track_running_stats}")
        return "bn", {}
    if type(m) in _ACT_MODULES:
        if isinstance(m, nn.LeakyReLU) and m.negative_slope != 0.01:
            _fail(what, where, f"negative_slope {m.negative_slope}: the grammar's leaky_relu has 0.01")
        if isinstance(m, nn.GELU) and m.approximate != "none":
            _fail(what, where, "GELU(approximate='tanh'): the grammar's gelu is the exact one")
        return "act", {"act": _ACT_MODULES[type(m)]}
    if type(m) in (nn.Dropout, nn.Dropout2d):
        kind = "dropout" if type(m) is nn.Dropout else "dropout2d"
        return ("identity", {}) if m.p == 0 else (kind, {"p": float(m.p)})
    if type(m) is nn.MaxPool2d:
        if m.ceil_mode or m.return_indices or _square(what, where, "dilation", m.dilation) != 1:
            _fail(what, where, "MaxPool2d with ceil_mode, dilation or return_indices is not in the grammar")
        return _pool(m.kernel_size, m.stride, m.padding, what, where, in_shape, shape, avg=False)
    if type(m) is nn.AvgPool2d:
        if m.ceil_mode or not m.count_include_pad or m.divisor_override:
            _fail(what, where, "AvgPool2d with ceil_mode, count_include_pad=False or a divisor is not in the grammar")
        return _pool(m.kernel_size, m.stride, m.padding, what, where, in_shape, shape, avg=True)
    if type(m) in (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d):
        return _global(what, where, m.output_size, in_shape, avg=type(m) is nn.AdaptiveAvgPool2d)
    if type(m) is nn.Linear:
        if len(in_shape) != 1:
            _fail(what, where, f"a Linear on a {'x'.join(map(str, in_shape))} tensor; the grammar's linear follows "
                               "global pooling")
        return "linear", {"out": m.out_features, "bias": m.bias is not None}
    if type(m) is nn.Flatten:
        return _flatten(in_shape, shape, what, where)
    if type(m) is nn.Identity:
        return "identity", {}
    if type(m) is nn.LogSoftmax:
        return _log_softmax(m.dim, shape, what, where)
    _fail(what, where, f"the grammar has no {type(m).__name__}; it has {SUPPORTED}")


def _flatten(in_shape: tuple, shape: tuple, what: str, where: str) -> tuple[str, dict]:
    if len(shape) == len(in_shape) and shape == in_shape:
        return "identity", {}
    if len(shape) != 1 or (len(in_shape) == 3 and in_shape[1:] != (1, 1)):
        _fail(what, where, f"flattens a {'x'.join(map(str, in_shape))} map into {'x'.join(map(str, shape))}; the "
                           "grammar's linear needs a 1x1 map (global pooling before it)")
    return "flatten", {}


def _log_softmax(dim, shape: tuple, what: str, where: str) -> tuple[str, dict]:
    if dim != 1 and dim != -len(shape):  # the class dimension, counted from either end
        _fail(what, where, f"log_softmax over dim {dim}; only over the classes (dim 1) is in the grammar")
    return "log_softmax", {}


def _arg(n, i: int, name: str, default=None):
    return n.args[i] if len(n.args) > i else n.kwargs.get(name, default)


def convert_function(fn, n, in_shapes: list, shape: tuple, what: str, where: str) -> tuple[str, dict]:
    """The kind and settings of a call of function ``fn`` (fx node ``n``)."""
    in_shape = in_shapes[0] if in_shapes else ()
    if fn in _ACT_FUNCTIONS:
        if fn is F.leaky_relu and _arg(n, 1, "negative_slope", 0.01) != 0.01:
            _fail(what, where, "negative_slope other than 0.01 is not the grammar's leaky_relu")
        if fn is F.gelu and n.kwargs.get("approximate", "none") != "none":
            _fail(what, where, "GELU(approximate='tanh'): the grammar's gelu is the exact one")
        return "act", {"act": _ACT_FUNCTIONS[fn]}
    if fn in (F.dropout, F.dropout2d):
        p = float(_arg(n, 1, "p", 0.5))
        return ("identity", {}) if p == 0 else ("dropout" if fn is F.dropout else "dropout2d", {"p": p})
    if fn in (F.max_pool2d, F.avg_pool2d):
        k, s, p = _arg(n, 1, "kernel_size"), _arg(n, 2, "stride"), _arg(n, 3, "padding", 0)
        return _pool(k, s, p, what, where, in_shape, shape, avg=fn is F.avg_pool2d)
    if fn in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d):
        return _global(what, where, _arg(n, 1, "output_size"), in_shape, avg=fn is F.adaptive_avg_pool2d)
    if fn in (operator.add, operator.iadd, torch.add):
        return "add", {}
    if fn is torch.cat:
        if _arg(n, 1, "dim", 0) not in (1, -3):
            _fail(what, where, "torch.cat over a dimension other than the channels (dim=1)")
        return "cat", {}
    if fn is torch.flatten:
        return _flatten(in_shape, shape, what, where)
    if fn in (F.log_softmax, torch.log_softmax):
        return _log_softmax(_arg(n, 1, "dim"), shape, what, where)
    if fn in (operator.mul, torch.mul, operator.matmul, torch.matmul) and len(in_shapes) > 1:
        _fail(what, where, "multiplies two paths; the grammar merges paths by add or concat only")
    _fail(what, where, f"the grammar has no {what}; it has {SUPPORTED}")


def convert_method(name: str, n, in_shapes: list, shape: tuple, what: str, where: str) -> tuple[str, dict]:
    """The kind and settings of a tensor method call ``x.name(...)``."""
    in_shape = in_shapes[0] if in_shapes else ()
    if name in ("view", "reshape", "flatten", "squeeze"):
        return _flatten(in_shape, shape, what, where)
    if name in ("contiguous",):
        return "identity", {}
    if name in ("relu", "relu_"):
        return "act", {"act": "relu"}
    if name in ("add", "add_", "__add__"):
        return "add", {}
    if name == "log_softmax":
        return _log_softmax(_arg(n, 1, "dim"), shape, what, where)
    if name == "mean" and len(in_shape) == 3 and len(shape) == 1:
        return "gap", {}
    if name in ("mul", "mul_", "matmul") and len(in_shapes) > 1:
        _fail(what, where, "multiplies two paths; the grammar merges paths by add or concat only")
    _fail(what, where, f"the grammar has no tensor method {name}(); it has {SUPPORTED}")
