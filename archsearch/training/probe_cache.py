"""Where the timed probes (precision and layout, torch.compile) keep their verdicts, and whether
a verdict may be kept: a probe's result is cached per machine, torch version, device, thread
count, spec and batch size (``$ARCHSEARCH_CACHE_DIR``, default ``~/.cache/archsearch``, file
``precision.json``), unless other processes took the run's cores while it was timed
(:class:`OtherLoad`, :data:`BUSY`)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import time
from pathlib import Path

from archsearch.errors import ConfigError
from archsearch.files import write_whole

__all__ = ["BUSY", "NATIVE_BF16", "OtherLoad", "busy_limit", "busy_note", "cache_key", "cache_path", "cpu_flags",
           "machine_id", "read_entry", "write_entry"]


# ------------------------------------------------------------------ the machine's other load
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


# ------------------------------------------------------------------ the cache
def cache_path() -> Path:
    base = os.environ.get("ARCHSEARCH_CACHE_DIR") or Path.home() / ".cache" / "archsearch"
    return Path(base) / "precision.json"


def machine_id(device) -> str:
    """The hardware a probe's result holds for: CPU model and bf16/AMX flags, or the GPU's name."""
    import torch

    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    model = platform.machine()
    with contextlib.suppress(OSError):
        model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                      if ln.startswith("model name")), model)
    have = cpu_flags() or set()
    flags = "+".join(f for f in (*NATIVE_BF16, "avx512f", "avx2") if f in have)
    # oneDNN / ATen limited to a lower instruction set (e.g. to reproduce a CPU without bf16) time differently
    limits = ",".join(f"{k}={os.environ[k]}" for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY") if os.environ.get(k))
    return f"cpu:{model}:{flags}:{os.cpu_count()}:{limits}"


NATIVE_BF16 = ("avx512_bf16", "amx_bf16")  # the x86 flags of bf16 in hardware (without them oneDNN emulates it)


def cpu_flags() -> set[str] | None:
    """The x86 CPU's instruction-set flags (``/proc/cpuinfo``); None where there is no such line."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return None


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
        write_whole(path, json.dumps(data, indent=1, sort_keys=True))


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
