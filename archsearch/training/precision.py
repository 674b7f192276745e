"""Device and numeric precision: where the model runs, in which dtype, in which memory layout.

``trainer.amp`` and ``trainer.channels_last`` may be set (``off``/``bf16``/``fp16``,
``true``/``false``) or ``auto``: then a short timed probe of the model's real training step
decides, on the machine the run is on (oneDNN reports bf16 on CPUs that only emulate it, at
half the fp32 rate). Candidates, each NCHW and channels_last: on a CPU fp32 and bf16 autocast;
on CUDA fp32, fp16 with a gradient scaler, and bf16 where the GPU has it in hardware. The
fastest candidate whose loss and gradients stay finite wins (one that raises loses); fp32 NCHW
is always a candidate, so ``auto`` never picks something slower than it (up to timing noise).
The choice is cached per machine, torch version, device, thread count, spec hash and batch
size (``$ARCHSEARCH_CACHE_DIR``, default ``~/.cache/archsearch``, file ``precision.json``),
unless other work shared the CPU or the GPU while it was timed.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import logging
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archsearch.errors import ConfigError

log = logging.getLogger("archsearch")

__all__ = ["BUSY", "OtherLoad", "Precision", "busy_note", "cache_key", "cache_path", "choose_precision", "machine_id",
           "pick_amp", "pick_device", "probe", "read_entry", "write_entry"]

# torch is imported in the functions that use it: archsearch.train imports the training modules at
# its top and refuses a mistyped knob before torch is loaded, and `from archsearch import fit` loads
# torch only when called

AMP_MODES = ("auto", "bf16", "fp16", "off")
LAYOUTS = ("auto", "true", "false")
_DTYPES = {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}  # the probe's names -> torch dtype names


def _dtype(name: str):
    """``fp32`` / ``bf16`` / ``fp16`` -> the autocast dtype (None for fp32)."""
    import torch

    return getattr(torch, _DTYPES[name]) if _DTYPES[name] else None


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
    return None if mode in ("auto", "off") else _dtype(mode)


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

    @property
    def amp_name(self) -> str:
        return str(self.amp).replace("torch.", "") if self.amp is not None else "off"

    @property
    def amp_short(self) -> str:
        """``fp32`` / ``bf16`` / ``fp16``: as the probe names the candidates' autocast."""
        return {"off": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(self.amp_name, self.amp_name)

    @property
    def label(self) -> str:
        """As the probe names candidates: ``fp32 NCHW``, ``bf16 channels_last``, ..."""
        return _label(self.amp_short, self.channels_last)

    def describe(self) -> str:
        layout = "channels_last" if self.channels_last else "NCHW"
        what = f"amp {self.amp_name}, {layout}"
        if not self.rates:
            return f"{what} (set)"
        probe = ", ".join(f"{k} {v:,.0f}" if v else f"{k} not finite (loss or gradients)"
                          for k, v in sorted(self.rates.items(), key=lambda kv: -kv[1]))
        return f"{what} ({self.source}: training-step img/s {probe}{'; ' + self.note if self.note else ''})"

    def tags(self) -> dict[str, str]:
        return {"amp": self.amp_name, "channels_last": str(self.channels_last).lower(),
                "precision.source": self.source, "precision.why": self.describe()}


# ------------------------------------------------------------------ the probe
def candidates(device, amp_setting: str, layout: bool | None) -> list[tuple[str, bool]]:
    import torch

    if amp_setting != "auto":
        amps = ["fp32" if amp_setting == "off" else amp_setting]
    elif device.type == "cuda":  # bf16 in hardware (Ampere on): emulated (T4, RTX 20xx) convolutions fail in cuDNN
        amps = ["fp32", "fp16"] + (["bf16"] if torch.cuda.is_bf16_supported(including_emulation=False) else [])
    else:
        amps = ["fp32", "bf16"] if device.type == "cpu" else ["fp32"]
    layouts = [layout] if layout is not None else [False, True]
    return [(a, cl) for a in amps for cl in layouts]


def _label(amp: str, cl: bool) -> str:
    return f"{amp} {'channels_last' if cl else 'NCHW'}"


class Stepper:
    """One candidate's training step on its own copy of the model (``own_copy=False``: on ``model``
    itself, e.g. a compiled one), with a fixed random batch. ``finite``: with fp16's scaler an
    overflow (step skipped, scale lowered) is normal; only a non-finite loss or no step taken counts."""

    def __init__(self, model, device, amp: str, cl: bool, batch, num_classes: int, own_copy: bool = True):
        import torch

        fmt = torch.channels_last if cl else torch.contiguous_format
        self.model = (copy.deepcopy(model) if own_copy else model).to(device).to(memory_format=fmt).train()
        self.x = batch.to(device).contiguous(memory_format=fmt)
        self.y = torch.arange(len(batch), device=device) % num_classes
        self.dtype = _dtype(amp)
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


def _cpu_seconds() -> tuple[float, float] | None:
    """(CPU seconds the machine has been busy, of this process, all threads); None without ``/proc/stat``."""
    try:
        vals = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    busy = sum(vals[:8]) - vals[3] - (vals[4] if len(vals) > 4 else 0)  # all but idle and iowait (guest is in user)
    t = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), t.user + t.system


class OtherLoad:
    """How much of the CPU this process's threads would use other processes took, from construction
    to :meth:`share`: a probe timed on a busy machine measures the contention, so it is not cached
    (:data:`BUSY`). Cores beyond this process's threads are free for others (a sweep's parallel trials)."""

    def __init__(self, threads: int | None = None):
        import torch

        self.threads = threads or torch.get_num_threads()
        self.t0, self.c0 = time.perf_counter(), _cpu_seconds()

    def share(self) -> float | None:
        """Other processes' CPU beyond the cores left free, as a share of this process's (0-1); or None."""
        c1, wall = _cpu_seconds(), time.perf_counter() - self.t0
        if self.c0 is None or c1 is None or wall <= 0:
            return None
        cpus = os.cpu_count() or 1
        mine = min(self.threads, cpus)
        others = ((c1[0] - self.c0[0]) - (c1[1] - self.c0[1])) / wall  # cores' worth, on average
        return min(1.0, max(0.0, others - (cpus - mine)) / mine)


BUSY = 0.25  # other processes took more than this share of a run's cores while its probe timed: not cached


def busy_limit() -> float:
    """The share above which a probe's result is not cached: ``$ARCHSEARCH_PROBE_BUSY`` (0-1; 1 caches
    whatever the load), default :data:`BUSY`. Read before a probe runs, so a bad value costs no probe."""
    raw = os.environ.get("ARCHSEARCH_PROBE_BUSY")
    try:
        limit = float(raw) if raw else BUSY
    except ValueError:
        limit = float("nan")
    if not 0.0 <= limit <= 1.0:
        raise ConfigError(f"ARCHSEARCH_PROBE_BUSY: must be a number from 0 to 1, got {raw!r}")
    return limit


def busy_note(share: float | None, limit: float, device=None) -> str:
    """'' for a quiet machine (other processes took at most ``limit`` of the run's cores, and the
    run has its GPU to itself), else why a probe's result was not cached."""
    shared = int(os.environ.get("ARCHSEARCH_GPU_SHARED_BY") or 1) if getattr(device, "type", "") == "cuda" else 1
    if shared > 1:
        return f"the GPU is shared by {shared} trials (trials_per_device): not cached, the next run probes again"
    if share is None or share <= limit:
        return ""
    return (f"the machine was busy while it timed (other processes took {share:.0%} of this run's cores): "
            "not cached, the next run probes again")


def probe(model, device, candidates: list[tuple[str, bool]], batch_size: int, input_shape: tuple[int, int, int],
          num_classes: int, steps: int = 3, load: dict | None = None) -> dict[str, float]:
    """Training-step images/s of each candidate (median of ``steps`` timed steps after one
    warm-up, candidates interleaved so drift hits all alike); non-finite candidates get 0.
    Leaves ``model`` and the global RNG untouched. ``load``, when given, receives ``others``: the
    share of the CPU other processes took while the steps were timed (:class:`OtherLoad`)."""
    import torch

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        g = torch.Generator().manual_seed(0)
        batch = torch.randn(batch_size, *input_shape, generator=g)
        steppers: dict[str, Any] = {}
        times: dict[str, list[float]] = {_label(a, cl): [] for a, cl in candidates}
        for a, cl in candidates:  # warm-up: oneDNN / cuDNN pick their kernels here
            _guarded(steppers, times, _label(a, cl), lambda a=a, cl=cl: Stepper(model, device, a, cl, batch, num_classes))
        watch = OtherLoad()
        for _ in range(steps):
            for k in list(steppers):
                _guarded(steppers, times, k, lambda k=k: steppers[k])
        if load is not None:
            load["others"] = watch.share()
    return {k: (batch_size / sorted(t)[len(t) // 2] if k in steppers and steppers[k].finite else 0.0)
            for k, t in times.items()}


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


# ------------------------------------------------------------------ the cache
def cache_path() -> Path:
    base = os.environ.get("ARCHSEARCH_CACHE_DIR") or Path.home() / ".cache" / "archsearch"
    return Path(base) / "precision.json"


def machine_id(device) -> str:
    """The hardware a probe's result holds for: CPU model and bf16/AMX flags, or the GPU's name."""
    import torch

    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    model, flags, named = platform.machine(), "", False
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not named:
                model, named = line.split(":", 1)[1].strip(), True
            elif line.startswith("flags") and not flags:
                have = set(line.split(":", 1)[1].split())
                flags = "+".join(f for f in ("avx512_bf16", "amx_bf16", "avx512f", "avx2") if f in have)
    # oneDNN / ATen limited to a lower instruction set (e.g. to reproduce a CPU without bf16) time differently
    limits = ",".join(f"{k}={os.environ[k]}" for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY") if os.environ.get(k))
    return f"cpu:{model}:{flags}:{os.cpu_count()}:{limits}"


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as fh:  # closing the file releases the lock
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # absent or damaged: probe again and rewrite it


def _write_cache(path: Path, key: str, entry: dict) -> None:
    with contextlib.suppress(OSError), _locked(path):
        data = _read_cache(path)
        data[key] = entry
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)


# ------------------------------------------------------------------ the choice
MARGIN = 1.03  # a candidate must beat the first (fp32 NCHW under auto) by 3%: timing noise is not a reason


def _fastest(cands: list[tuple[str, bool]], rates: dict[str, float]) -> tuple[str, bool]:
    base = cands[0]
    best = max(cands, key=lambda c: rates.get(_label(*c), 0.0))
    return best if rates.get(_label(*best), 0.0) > MARGIN * rates.get(_label(*base), 0.0) else base


def cache_key(device, spec_key: str, batch_size: int, what: str) -> str:
    """What a probe's result holds for: machine, torch, device, threads, spec, batch size, and what was timed."""
    import torch

    return "|".join([machine_id(device), f"torch {torch.__version__}", str(device), f"threads {torch.get_num_threads()}",
                     spec_key, f"batch {batch_size}", what])


def read_entry(key: str) -> dict | None:
    """The cached probe result for ``key`` (None: not probed here yet)."""
    entry = _read_cache(cache_path()).get(key)
    return entry if isinstance(entry, dict) else None


def write_entry(key: str, entry: dict) -> None:
    _write_cache(cache_path(), key, entry)


def choose_precision(tcfg, device, model, spec_key: str, batch_size: int, input_shape: tuple[int, int, int],
                     num_classes: int, probe_fn: Callable[..., dict[str, float]] = probe) -> Precision:
    """``trainer.amp`` / ``trainer.channels_last`` -> :class:`Precision`; probes (or reads the
    cache) for whatever is ``auto``."""
    amp_setting, layout = str(tcfg.amp), _layout(tcfg.channels_last)
    pick_amp(amp_setting)  # validates
    cands = candidates(device, amp_setting, layout)
    if len(cands) == 1:
        a, cl = cands[0]
        return Precision(device, _dtype(a), cl)
    key = cache_key(device, spec_key, batch_size, ",".join(_label(a, cl) for a, cl in cands))
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
        else:
            write_entry(key, entry)
    rates = {str(k): float(v) for k, v in entry["rates"].items()}
    a, cl = _fastest(cands, rates)
    return Precision(device, _dtype(a), cl, source, rates, busy)
