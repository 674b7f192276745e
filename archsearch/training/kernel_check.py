"""Does this machine compute a network's layers right in a given precision, layout and compilation?

A fast kernel is worth nothing if it is wrong. On a 2-core AMD EPYC with ``avx512_bf16`` and no
AMX (torch 2.14.1, docs/engine.md), bf16 convolutions with a dilation of 2 or more return weight
gradients that are garbage in channels_last, eager or compiled, and also when compiled from
NCHW: off by more than their own size, some draws NaN or inf, others finite, while eager NCHW and
fp32 are right. The probe's finiteness test caught only the NaN draws; a network trained on the
others learns nothing in its dilated layers, or stops with a NaN loss after a few steps.

So before a precision is timed or used, each distinct convolution and linear layer of the network
(kind, channels, kernel, stride, padding, dilation, groups and input size) runs alone on the
run's batch size in that precision and layout, forward and backward, and its output, input
gradient and parameter gradients are compared with fp32 NCHW eager on the same inputs (rounded to
the candidate's dtype first, so that only the kernels differ). A layer whose largest difference
exceeds :data:`TOL` of the largest fp32 value (a correct bf16 kernel stays near 0.003, the faulty
ones measured 1 to 1e35) is a :class:`Fault`. The layers are checked together in one module, so
a compiled check compiles once.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from archsearch.errors import ConfigError, first_line
from archsearch.training.depthwise_fp32 import DW_FP32, keep_depthwise_fp32
from archsearch.training.probe_cache import cache_key, read_entry, write_entry

__all__ = ["TOL", "Fault", "autocast_dtype", "candidate_label", "check_kernels", "checked", "describe_layer",
           "distinct_layers", "kernel_check_setting", "layer_census", "set_up_for"]

TOL = 0.05  # largest |difference| / largest |fp32 value| a layer may show (bf16 rounding: ~0.003)
# the probe's names -> torch dtype names (bf16-dw-fp32: bf16 autocast, depthwise convs in fp32)
_DTYPES = {"fp32": None, "bf16": "bfloat16", "fp16": "float16", DW_FP32: "bfloat16"}


def autocast_dtype(name: str):
    """``fp32`` / ``bf16`` / ``fp16`` / ``bf16-dw-fp32`` -> the autocast dtype (None for fp32)."""
    import torch

    return getattr(torch, _DTYPES[name]) if _DTYPES[name] else None


def set_up_for(model, amp: str):
    """``model`` as a candidate ``amp`` runs it: with its depthwise convs kept in fp32 for ``bf16-dw-fp32``,
    as it is otherwise (in place; returns ``model``)."""
    return keep_depthwise_fp32(model) if amp == DW_FP32 else model


def candidate_label(amp: str, cl: bool, compiled: bool = False) -> str:
    """How the probe, the check and the logs name a candidate: ``bf16 channels_last``, ``fp32 NCHW, compiled``."""
    return f"{amp} {'channels_last' if cl else 'NCHW'}" + (", compiled" if compiled else "")


@dataclass(frozen=True)
class Fault:
    """The worst wrong layer of a candidate: where, what it is, which result, how far off."""

    label: str  # e.g. "bf16 channels_last, compiled"
    layer: str  # the layer's YAML path (or its module name)
    what: str  # e.g. "conv 3x3 dilation 2, 24->24 channels on 24x32x32"
    part: str  # output / input gradient / weight gradient / bias gradient
    error: float  # largest |difference| / largest |fp32 value|; inf when not finite
    raised: str = ""  # the check itself failed (a kernel that raises): why
    more: int = 0  # other layers found wrong

    def describe(self) -> str:
        if self.raised:
            return f"{self.label} failed on this machine: {self.raised}"
        off = "not finite" if not math.isfinite(self.error) else f"off by {self.error:.3g} of its largest value"
        also = f" (and {self.more} more layer{'s' * (self.more > 1)})" if self.more else ""
        return (f"{self.label} computes layer {self.layer} ({self.what}){also} wrong on this machine: "
                f"its {self.part} is {off} against fp32")


def _names(model) -> dict[int, str]:
    """id(module) -> the YAML path of the innermost layer it belongs to (a grammar ``Net``), else its module name."""
    names = {id(m): n for n, m in model.named_modules()}
    by_path = getattr(model, "modules_by_path", None)
    if callable(by_path):
        for path, mod in sorted(by_path().items(), key=lambda kv: len(kv[0])):  # an inner layer's path is longer
            for sub in mod.modules():
                names[id(sub)] = path
    return names


def _signature(m, shape: tuple[int, ...]) -> tuple:
    import torch.nn as nn

    if isinstance(m, nn.Conv2d):
        return ("conv", m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
                m.bias is not None, m.padding_mode, shape)
    return ("linear", m.in_features, m.out_features, m.bias is not None, shape)


def describe_layer(m, shape: tuple[int, ...]) -> str:
    """``conv 7x7 dilation 3 depthwise, 64->64 channels on 64x16x16``: a layer as the check and the bench name it."""
    import torch.nn as nn

    dims = "x".join(map(str, shape))
    if not isinstance(m, nn.Conv2d):
        return f"linear {m.in_features}->{m.out_features} on {dims}"
    k = "x".join(map(str, m.kernel_size))
    extra = "".join([f" stride {m.stride[0]}" if max(m.stride) > 1 else "",
                     f" dilation {m.dilation[0]}" if max(m.dilation) > 1 else "",
                     " depthwise" if m.groups == m.in_channels and m.groups > 1 else
                     (f" groups {m.groups}" if m.groups > 1 else "")])
    return f"conv {k}{extra}, {m.in_channels}->{m.out_channels} channels on {dims}"


def distinct_layers(model, input_shape: tuple[int, int, int]) -> list[tuple[str, Any, tuple[int, ...]]]:
    """(name, a copy of the module, its input shape without the batch) for each distinct convolution
    and linear layer, found by one fp32 forward of a copy of ``model`` on the CPU (``model`` is untouched)."""
    return [(name, m, shape) for name, m, shape, _ in layer_census(model, input_shape)]


def layer_census(model, input_shape: tuple[int, int, int]) -> list[tuple[str, Any, tuple[int, ...], int]]:
    """:func:`distinct_layers` with how many layers of ``model`` each one stands for (name, module, shape, count)."""
    import torch
    import torch.nn as nn

    names = _names(model)
    probe = copy.deepcopy(model).float().cpu().eval()
    seen: dict[tuple, list] = {}
    hooks = []
    for orig, mod in zip(model.modules(), probe.modules()):
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            def hook(m, args, _out, name=names.get(id(orig), "?")):
                shape = tuple(args[0].shape[1:])
                seen.setdefault(_signature(m, shape), [name, m, shape, 0])[3] += 1
            hooks.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            probe(torch.zeros(2, *input_shape))
    finally:
        for h in hooks:
            h.remove()
    return [(name, copy.deepcopy(m), shape, n) for name, m, shape, n in seen.values()]  # copied without the hooks


def _zoo(layers):
    """The distinct layers side by side in one module: one call runs each on its own input."""
    import torch.nn as nn

    class Zoo(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList(layers)

        def forward(self, xs):
            return [m(x) for m, x in zip(self.layers, xs)]

    return Zoo()


def _results(zoo, xs, gs, device, dtype, cl: bool, compiled: bool) -> list[dict[str, Any]]:
    """Each layer's output, input gradient and parameter gradients (fp32, NCHW, on the CPU)."""
    import torch

    z = copy.deepcopy(zoo).to(device)
    fmt = torch.channels_last if cl else torch.contiguous_format
    if cl:
        z = z.to(memory_format=fmt)
    ins = [(x.to(device).contiguous(memory_format=fmt) if x.dim() == 4 else x.to(device)).detach().clone()
           .requires_grad_() for x in xs]
    fn = torch.compile(z, dynamic=False) if compiled else z
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        ys = fn(ins)
    sum((y.float() * g.to(device)).sum() for y, g in zip(ys, gs)).backward()
    out = []
    for m, y, x in zip(z.layers, ys, ins):
        parts = {"output": y.detach().float().cpu(), "input gradient": x.grad.float().cpu()}
        for pname, p in m.named_parameters():
            parts[f"{pname} gradient"] = (p.grad if p.grad is not None else torch.zeros_like(p)).float().cpu()
        out.append(parts)
    return out


def _error(a, ref) -> float:
    import torch

    if not bool(torch.isfinite(a).all()):
        return math.inf
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    diff = float((a - ref).abs().max()) if ref.numel() else 0.0
    return diff / scale if scale > 0 else (0.0 if diff == 0 else math.inf)


def check_kernels(model, device, amp: str, cl: bool, batch_size: int, input_shape: tuple[int, int, int],
                  compiled: bool = False, tol: float = TOL) -> Fault | None:
    """The worst layer of ``model`` that ``amp`` (fp32 / bf16 / fp16) in ``cl`` layout, eager or
    ``compiled``, computes more than ``tol`` away from fp32 NCHW eager on this device (None: all
    within). Leaves ``model`` and the global RNG untouched."""
    import torch

    label = candidate_label(amp, cl, compiled)
    if amp == "fp32" and not cl and not compiled:
        return None  # the reference itself
    layers = distinct_layers(model, input_shape)
    if not layers:
        return None
    dtype = autocast_dtype(amp)
    rnd = (lambda t: t.to(dtype).float()) if dtype is not None else (lambda t: t)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        g = torch.Generator().manual_seed(0)
        zoo = _zoo([m for _, m, _ in layers]).train()
        with torch.no_grad():
            for p in zoo.parameters():
                p.copy_(rnd(p))
        xs = [rnd(torch.randn(batch_size, *shape, generator=g)) for _, _, shape in layers]
        with torch.no_grad():
            shapes = [tuple(y.shape) for y in zoo(xs)]
        gs = [rnd(torch.randn(*s, generator=g)) for s in shapes]
        ref = _results(zoo, xs, gs, device, None, False, False)
        got = _results(set_up_for(copy.deepcopy(zoo), amp), xs, gs, device, dtype, cl, compiled)
    faults = []
    for (name, m, shape), r, c in zip(layers, ref, got):
        errs = {part: _error(c[part], rv) for part, rv in r.items()}
        part = max(errs, key=lambda k: errs[k])
        if errs[part] > tol:
            faults.append(Fault(label, name, describe_layer(m, shape), part, errs[part]))
    if not faults:
        return None
    worst = max(faults, key=lambda f: f.error)
    return replace(worst, more=len(faults) - 1)


def kernel_check_setting(tcfg) -> bool:
    """``trainer.kernel_check`` (true / false; absent: true) -> bool."""
    v = str(tcfg.get("kernel_check", True)).lower()
    if v not in ("true", "false"):
        raise ConfigError(f"trainer.kernel_check: must be true or false; got {tcfg.get('kernel_check')!r}")
    return v == "true"


def checked(model, device, amp: str, cl: bool, spec_key: str, batch_size: int, input_shape: tuple[int, int, int],
            compiled: bool = False) -> Fault | None:
    """:func:`check_kernels`, its verdict cached per machine, torch, device, threads, spec and batch
    size (the precision probe's cache); a check that raises is a fault (that kernel would raise in training)."""
    if amp == "fp32" and not cl and not compiled:
        return None  # the reference itself
    label = candidate_label(amp, cl, compiled)
    key = cache_key(device, spec_key, batch_size, f"kernels {label}")
    entry = read_entry(key)
    if entry and isinstance(entry.get("fault"), dict):
        return Fault(**entry["fault"]) if entry["fault"] else None
    try:
        fault = check_kernels(model, device, amp, cl, batch_size, input_shape, compiled)
    except Exception as e:  # noqa: BLE001 - a candidate that cannot run is the verdict, not the run's failure
        fault = Fault(label, "-", "-", "-", math.inf, first_line(e))
    write_entry(key, {"fault": asdict(fault) if fault else {}})
    return fault
