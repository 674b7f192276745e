"""Device and numeric precision: where the model runs, in which dtype, in which memory layout.

``trainer.amp`` and ``trainer.channels_last`` may be set (``off``/``bf16``/``fp16``/``bf16-dw-fp32``,
``true``/``false``) or ``auto``: then a short timed probe of the model's real training step
decides, on the machine the run is on (oneDNN reports bf16 on CPUs that only emulate it, at
half the fp32 rate). Candidates, each NCHW and channels_last: on a CPU fp32, and where the CPU
has bf16 instructions (or is not x86) bf16 autocast and, for a network with depthwise convs,
bf16 with those in fp32 (:mod:`archsearch.training.depthwise_fp32`); on an x86 CPU without them
bf16 is emulated, 0.05-0.5x the fp32 rate where measured, and only fp32 is timed. On CUDA fp32,
fp16 with a gradient scaler, and bf16 where the GPU has it in hardware. The
fastest candidate whose loss and gradients stay finite wins (one that raises loses); fp32 NCHW
is always a candidate, so ``auto`` never picks something slower than it (up to timing noise).
A candidate three times slower than the fastest after a round of timed steps is timed no further. The choice is cached per
machine, torch version, device, thread count, spec hash and batch size, unless other work shared
the CPU or the GPU while it was timed (:mod:`archsearch.training.probe_cache`).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from archsearch.errors import ConfigError
from archsearch.training.depthwise_fp32 import DW_FP32, depthwise_convs
from archsearch.training.kernel_check import (
    autocast_dtype,
    candidate_label,
    checked,
    kernel_check_setting,
    set_up_for,
)
from archsearch.training.probe_cache import (
    NATIVE_BF16,
    OtherLoad,
    busy_limit,
    busy_note,
    cache_key,
    cpu_flags,
    read_entry,
    write_entry,
)

log = logging.getLogger("archsearch")

__all__ = ["DROP", "Precision", "Stepper", "candidates", "cpu_bf16", "choose_precision", "pick_amp", "pick_device", "probe"]

# torch is imported in the functions that use it: archsearch.train imports the training modules at
# its top and refuses a mistyped knob before torch is loaded, and `from archsearch import fit` loads
# torch only when called

AMP_MODES = ("auto", "bf16", "fp16", DW_FP32, "off")
LAYOUTS = ("auto", "true", "false")


def pick_device(name: str):
    """``trainer.device`` -> torch.device (auto: CUDA if available, else CPU)."""
    import torch

    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device: {name!r} requested but CUDA is not available; use auto or cpu")
    if not (name == "cpu" or name.startswith("cuda") or name == "mps"):
        raise ConfigError(f"trainer.device: unknown device {name!r}; choose one of auto, cpu, cuda, cuda:N")
    device = torch.device(name)
    if device.type == "cuda" and device.index is not None:
        n = torch.cuda.device_count()
        if device.index >= n:
            raise ConfigError(f"trainer.device: {name!r} but this process sees {n} GPU{'s' if n != 1 else ''} "
                              f"(cuda:0-cuda:{n - 1}; CUDA_VISIBLE_DEVICES renumbers them from 0)")
        # the current device: synchronize(), the pin-memory thread and new tensors go to it, not to GPU 0
        torch.cuda.set_device(device)
    return device


def pick_amp(mode: str, device=None) -> Any:
    """An explicit ``trainer.amp`` -> autocast dtype or None (``auto`` is :func:`choose_precision`'s)."""

    if mode not in AMP_MODES:
        raise ConfigError(f"trainer.amp: unknown mode {mode!r}; choose one of {', '.join(AMP_MODES)}")
    return None if mode in ("auto", "off") else autocast_dtype(mode)


def _layout(value) -> bool | None:
    """``trainer.channels_last``: True / False, or None for auto."""
    if isinstance(value, bool):
        return value
    v = str(value).lower()
    if v not in LAYOUTS:
        raise ConfigError(f"trainer.channels_last: must be one of {', '.join(LAYOUTS)}; got {value!r}")
    return None if v == "auto" else v == "true"


@dataclass(frozen=True)
class Precision:
    """What the run uses, and why (``source``: set, probe or cache; ``rates``: the probe's img/s)."""

    device: Any
    amp: Any  # torch dtype for autocast, or None (fp32)
    channels_last: bool
    source: str = "set"
    rates: dict[str, float] = field(default_factory=dict)
    note: str = ""  # e.g. why the probe's result was not cached
    faults: dict[str, str] = field(default_factory=dict)  # candidates not used: they compute a layer wrong here
    depthwise_fp32: bool = False  # bf16-dw-fp32: the depthwise convs run in fp32 under the bf16 autocast

    @property
    def amp_name(self) -> str:
        name = str(self.amp).replace("torch.", "") if self.amp is not None else "off"
        return name + (", depthwise fp32" if self.depthwise_fp32 else "")

    @property
    def amp_short(self) -> str:
        """``fp32`` / ``bf16`` / ``fp16`` / ``bf16-dw-fp32``: as the probe names the candidates' autocast."""
        if self.depthwise_fp32:
            return DW_FP32
        return {"off": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(self.amp_name, self.amp_name)

    def set_up(self, model):
        """``model`` (in place) as this precision runs it: depthwise convs kept in fp32 for ``bf16-dw-fp32``."""
        return set_up_for(model, self.amp_short)

    @property
    def label(self) -> str:
        """As the probe names candidates: ``fp32 NCHW``, ``bf16 channels_last``, ..."""
        return candidate_label(self.amp_short, self.channels_last)

    def describe(self) -> str:
        layout = "channels_last" if self.channels_last else "NCHW"
        what = f"amp {self.amp_name}, {layout}"
        if not self.rates:
            return f"{what} (set)"
        probe = ", ".join(f"{k} {v:,.0f}" if v else f"{k} not finite (loss or gradients)"
                          for k, v in sorted(self.rates.items(), key=lambda kv: -kv[1]) if k not in self.faults)
        probe += "".join(f"; not used: {f}" for f in self.faults.values())
        return f"{what} ({self.source}: training-step img/s {probe}{'; ' + self.note if self.note else ''})"

    def tags(self) -> dict[str, str]:
        return {"amp": self.amp_name, "channels_last": str(self.channels_last).lower(),
                "precision.source": self.source, "precision.why": self.describe()}


# ------------------------------------------------------------------ the probe
def cpu_bf16() -> bool:
    """Whether ``auto`` times bf16 on this CPU: not on an x86 CPU whose flags lack ``avx512_bf16`` and
    ``amx_bf16`` (oneDNN emulates bf16 there, measured at 0.05-0.5x the fp32 rate, docs/engine.md);
    elsewhere (a CPU without an x86 flags line: an ARM one) it is timed."""
    flags = cpu_flags()
    return flags is None or bool(flags & set(NATIVE_BF16))


def candidates(device, amp_setting: str, layout: bool | None, depthwise: int = 0,
               bf16: bool | None = None) -> list[tuple[str, bool]]:
    """(amp, channels_last) pairs to time; ``depthwise``: how many depthwise convs the model has (on a
    CPU, ``bf16-dw-fp32`` is a candidate where there are any); ``bf16``: whether a CPU's bf16 candidates
    are timed (None: :func:`cpu_bf16`)."""
    import torch

    if amp_setting != "auto":
        amps = ["fp32" if amp_setting == "off" else amp_setting]
    elif device.type == "cuda":  # bf16 in hardware (Ampere on): emulated (T4, RTX 20xx) convolutions fail in cuDNN
        amps = ["fp32", "fp16"] + (["bf16"] if torch.cuda.is_bf16_supported(including_emulation=False) else [])
    elif device.type == "cpu" and (cpu_bf16() if bf16 is None else bf16):
        amps = ["fp32", "bf16"] + ([DW_FP32] if depthwise else [])
    else:
        amps = ["fp32"]
    layouts = [layout] if layout is not None else [False, True]
    return [(a, cl) for a in amps for cl in layouts]


class Stepper:
    """One candidate's training step on its own copy of the model (``own_copy=False``: on ``model``
    itself, e.g. a compiled one), with a fixed random batch. ``finite``: with fp16's scaler an
    overflow (step skipped, scale lowered) is normal; only a non-finite loss or no step taken counts."""

    def __init__(self, model, device, amp: str, cl: bool, batch, num_classes: int, own_copy: bool = True):
        import torch

        fmt = torch.channels_last if cl else torch.contiguous_format
        self.model = set_up_for(copy.deepcopy(model) if own_copy else model, amp).to(device).to(memory_format=fmt).train()
        self.x = batch.to(device).contiguous(memory_format=fmt)
        self.y = torch.arange(len(batch), device=device) % num_classes
        self.dtype = autocast_dtype(amp)
        self.device = device
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-3, momentum=0.9)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)
        self.bad, self.steps, self.skipped = False, 0, 0

    @property
    def finite(self) -> bool:
        return not self.bad and (self.skipped < self.steps or not self.steps)

    def step(self) -> float:
        import torch
        import torch.nn.functional as F

        # this run's GPU, not the current one (GPU 0 unless set): otherwise it times launches, not work
        sync = (lambda: torch.cuda.synchronize(self.device)) if self.device.type == "cuda" else (lambda: None)
        scaled = self.scaler.is_enabled()
        scale = self.scaler.get_scale() if scaled else 0.0
        sync()
        t0 = time.perf_counter()
        with torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            logits = self.model(self.x)
        loss = F.cross_entropy(logits.float(), self.y)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        sync()
        dt = time.perf_counter() - t0
        grads = [] if scaled else [p.grad for p in self.model.parameters() if p.grad is not None]
        self.bad |= not (bool(torch.isfinite(loss)) and all(bool(torch.isfinite(g).all()) for g in grads))
        self.steps += 1
        self.skipped += int(scaled and self.scaler.get_scale() < scale)
        return dt


DROP = 3.0  # a candidate whose fastest timed step is this many times the fastest candidate's gets no more steps


def probe(model, device, candidates: list[tuple[str, bool]], batch_size: int, input_shape: tuple[int, int, int],
          num_classes: int, steps: int = 3, load: dict | None = None, drop: float | None = DROP) -> dict[str, float]:
    """Training-step images/s of each candidate (median of ``steps`` timed steps after one
    warm-up, candidates interleaved so drift hits all alike; one ``drop`` times slower than the
    fastest after a round is timed no further, None times all to the end); non-finite candidates get 0.
    Leaves ``model`` and the global RNG untouched. ``load``, when given, receives ``others``: the
    share of the CPU other processes took while the steps were timed (:class:`OtherLoad`)."""
    import torch

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        g = torch.Generator().manual_seed(0)
        batch = torch.randn(batch_size, *input_shape, generator=g)
        steppers: dict[str, Any] = {}
        times: dict[str, list[float]] = {candidate_label(a, cl): [] for a, cl in candidates}
        for a, cl in candidates:  # warm-up: oneDNN / cuDNN pick their kernels here
            _guarded(steppers, times, candidate_label(a, cl), lambda a=a, cl=cl: Stepper(model, device, a, cl, batch, num_classes))
        watch = OtherLoad()
        active = list(steppers)
        for _ in range(steps):
            for k in active:
                _guarded(steppers, times, k, lambda k=k: steppers[k])
            active = _still_in(active, steppers, times, drop)
        if load is not None:
            load["others"] = watch.share()
    return {k: (batch_size / sorted(t)[len(t) // 2] if k in steppers and steppers[k].finite else 0.0)
            for k, t in times.items()}


def _still_in(active: list[str], steppers: dict, times: dict[str, list[float]], drop: float | None) -> list[str]:
    """The candidates that may still win: one ``drop`` times slower than the fastest cannot, and on a CPU
    without native bf16 each of its steps costs 10-20 fp32 steps, so it is timed no further (its rate
    stays the median of the steps it had)."""
    timed = {k: min(times[k]) for k in active if k in steppers and times[k]}
    if not timed or drop is None:
        return [k for k in active if k in steppers]
    best = min(timed.values())
    return [k for k in active if k in steppers and timed.get(k, 0.0) <= drop * best]


def _guarded(steppers: dict, times: dict, label: str, make) -> None:
    """One step of a candidate (made by ``make``); one that raises (bf16 convolutions cuDNN lacks) loses."""
    try:
        s = make()
        dt = s.step()
    except Exception as e:  # any failure of a candidate is its verdict, not the run's
        log.warning("trainer.amp/channels_last=auto: %s failed in the probe: %s", label, f"{e!r}"[:200])
        return steppers.pop(label, None)
    if label in steppers:
        times[label].append(dt)
    steppers[label] = s


# ------------------------------------------------------------------ the choice
MARGIN = 1.03  # a candidate must beat the first (fp32 NCHW under auto) by 3%: timing noise is not a reason


def _fastest(cands: list[tuple[str, bool]], rates: dict[str, float]) -> tuple[str, bool]:
    base = cands[0]
    best = max(cands, key=lambda c: rates.get(candidate_label(*c), 0.0))
    return best if rates.get(candidate_label(*best), 0.0) > MARGIN * rates.get(candidate_label(*base), 0.0) else base


def _warn_emulated_bf16(mode: str) -> None:
    """An explicit ``trainer.amp=bf16`` is kept, but on an x86 CPU without bf16 instructions it is
    measured at 0.05-0.5x the fp32 rate (docs/engine.md): say so before the run spends hours."""
    if not cpu_bf16():
        log.warning("trainer.amp=%s on a CPU without bf16 instructions (no avx512_bf16 or amx_bf16): bf16 is "
                    "emulated there and has trained at 0.05-0.5x the fp32 rate; trainer.amp=auto times it and "
                    "takes the faster", mode)


def choose_precision(tcfg, device, model, spec_key: str, batch_size: int, input_shape: tuple[int, int, int],
                     num_classes: int, probe_fn: Callable[..., dict[str, float]] = probe) -> Precision:
    """``trainer.amp`` / ``trainer.channels_last`` -> :class:`Precision`; probes (or reads the
    cache) for whatever is ``auto``. With ``trainer.kernel_check`` (the default) the fastest candidate
    is checked, and passed over if it computes a layer wrong on this machine (then the next fastest,
    and so on); one set by hand is refused."""
    amp_setting, layout = str(tcfg.amp), _layout(tcfg.channels_last)
    pick_amp(amp_setting)  # validates
    check = kernel_check_setting(tcfg)
    if amp_setting in ("bf16", DW_FP32) and device.type == "cpu":
        _warn_emulated_bf16(amp_setting)
    cands = candidates(device, amp_setting, layout, depthwise_convs(model))
    if len(cands) == 1:
        a, cl = cands[0]
        fault = checked(model, device, a, cl, spec_key, batch_size, input_shape) if check else None
        if fault:
            raise ConfigError(f"trainer.amp={amp_setting} trainer.channels_last={str(cl).lower()}: {fault.describe()} "
                              f"(a kernel fault of this torch build); set {_instead(a, cl)}, or "
                              "trainer.kernel_check=false to train on it anyway")
        return Precision(device, autocast_dtype(a), cl, depthwise_fp32=a == DW_FP32)
    key = cache_key(device, spec_key, batch_size, ",".join(candidate_label(a, cl) for a, cl in cands)
                    + (" (kernels checked)" if check else ""))
    entry = read_entry(key)
    source, busy = "cache", ""
    if not entry or not isinstance(entry.get("rates"), dict):
        load: dict = {}
        limit = busy_limit()
        rates = probe_fn(model, device, cands, batch_size, input_shape, num_classes, load=load)
        entry, source = {"rates": rates, "when": time.strftime("%Y-%m-%d %H:%M:%S")}, "probe"
        busy = busy_note(load.get("others"), limit, device)
        if busy:
            log.warning("trainer.amp/channels_last=auto: %s", busy)
    rates = {str(k): float(v) for k, v in entry["rates"].items()}
    faults = {str(k): str(v) for k, v in (entry.get("faults") or {}).items()}
    left = [c for c in cands if candidate_label(*c) not in faults]
    while check and left and (f := checked(model, device, *_fastest(left, rates), spec_key, batch_size, input_shape)):
        faults[f.label] = f.describe()  # the fastest computes a layer wrong: the next fastest, checked in turn
        left = [c for c in left if candidate_label(*c) != f.label]
    if not left:
        raise ConfigError(f"trainer.amp={amp_setting}: every candidate computes a layer wrong on this machine "
                          f"({'; '.join(faults.values())}); set trainer.amp=off, or trainer.kernel_check=false "
                          "to train on it anyway")
    if source == "probe" and not busy:
        write_entry(key, {**entry, "faults": faults})
    for f in faults.values():
        log.warning("trainer.amp/channels_last=auto: not used: %s", f)
    a, cl = _fastest(left, rates)
    return Precision(device, autocast_dtype(a), cl, source, rates, busy, faults, depthwise_fp32=a == DW_FP32)


def _instead(amp: str, cl: bool) -> str:
    """What a refused explicit precision could be instead (auto checks and times each)."""
    other = ["trainer.channels_last=false"] if cl else []
    other += ["trainer.amp=off"] if amp != "fp32" else []
    return " or ".join(other + ["trainer.amp=auto trainer.channels_last=auto (they choose among the right ones)"])
