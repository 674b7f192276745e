"""bf16 autocast with the depthwise convolutions kept in fp32: the precision mode ``bf16-dw-fp32``.

On a 2-core AMD EPYC with ``avx512_bf16`` and no AMX (torch 2.14.1, docs/engine.md), oneDNN's bf16
depthwise kernels are slower than its fp32 ones: a depthwise 7x7 conv on 32 channels at 32x32 took
63 ms forward and backward in bf16 channels_last against 39 ms in fp32 channels_last, a dilated one
136 against 90, while full convolutions ran 1.3-2.6x faster in bf16. A network of depthwise
branches (``res_branch``) then trains fastest with its full convolutions in bf16 and its depthwise
ones in fp32. This mode does that: autocast as in ``bf16``, except that every depthwise conv
(``groups == in_channels > 1``) runs with autocast off on an fp32 copy of its input. The
parameters, their names and the checkpoint are those of the same network in any other precision;
only the class of the depthwise modules changes (:class:`Fp32DepthwiseConv2d`), so a model set
up this way trains, evaluates, compiles and saves as before.
"""

from __future__ import annotations

__all__ = ["DW_FP32", "depthwise_convs", "keep_depthwise_fp32"]

DW_FP32 = "bf16-dw-fp32"  # the mode's name in trainer.amp, the probe's candidates and the logs


def _is_depthwise(m) -> bool:
    import torch.nn as nn

    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels


def depthwise_convs(model) -> int:
    """How many depthwise convolutions ``model`` has (0: the mode would change nothing)."""
    return sum(1 for m in model.modules() if _is_depthwise(m))


def _fp32_class():
    import torch
    import torch.nn as nn

    class Fp32DepthwiseConv2d(nn.Conv2d):
        """A depthwise ``nn.Conv2d`` that runs in fp32 whatever the autocast around it."""

        def forward(self, x):
            with torch.autocast(x.device.type, enabled=False):
                return super().forward(x.float())

    # pickled by name (the MLflow model logs the module): found again through __getattr__ below
    Fp32DepthwiseConv2d.__module__, Fp32DepthwiseConv2d.__qualname__ = __name__, "Fp32DepthwiseConv2d"
    return Fp32DepthwiseConv2d


_CLASS = None


def __getattr__(name: str):
    """``Fp32DepthwiseConv2d``, made on first use (torch is imported only then)."""
    global _CLASS
    if name != "Fp32DepthwiseConv2d":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _CLASS is None:
        _CLASS = _fp32_class()
    return _CLASS


def keep_depthwise_fp32(model):
    """Make each depthwise conv of ``model`` run in fp32 under autocast (in place; returns ``model``).
    Idempotent; parameters and state-dict keys are unchanged. Only plain ``nn.Conv2d`` modules are
    changed: a subclass with its own forward is left as it is."""
    import torch.nn as nn

    cls = __getattr__("Fp32DepthwiseConv2d")  # one class for the process: compile and deepcopy see one type
    for m in model.modules():
        if type(m) is nn.Conv2d and _is_depthwise(m):
            m.__class__ = cls
    return model
