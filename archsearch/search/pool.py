"""Concurrent trials for the archsearch sweeper: a fixed set of slots, one trial process each.

A slot is a device and a share of the CPU: with GPUs, ``CUDA_VISIBLE_DEVICES`` names the
slot's GPU as the sweeper sees it (its own ``CUDA_VISIBLE_DEVICES`` entry: an index, a UUID or a
MIG instance, so a SLURM allocation's GPUs stay the ones used; ``trials_per_device`` slots per
GPU); ``devices=cpu`` hides the GPUs from its trials (an empty ``CUDA_VISIBLE_DEVICES``, so
``trainer.device=auto`` trains on the CPU); on a CPU the cores are divided between the
slots (each process pinned to its own cores, with as many threads), so N trials do not
oversubscribe the machine. A trial's process is :mod:`archsearch.search.trial_process`; it dies with
the sweeper (SIGTERM through the kernel's parent-death signal), so a killed sweeper leaves
no orphan training on.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Slot", "Pool", "plan_slots"]


@dataclass(frozen=True)
class Slot:
    index: int
    gpu: int | str | None  # the GPU as the sweeper's CUDA_VISIBLE_DEVICES names it, or None on a CPU
    cores: tuple[int, ...]  # the CPU cores the trial is pinned to
    hide_gpus: bool = False  # devices=cpu: the trial must not see the GPUs (trainer.device=auto would take one)
    sharing: int = 1  # trials running on this slot's GPU at once (trials_per_device)

    def env(self) -> dict[str, str]:
        t = str(max(1, len(self.cores)))
        env = {"OMP_NUM_THREADS": t, "MKL_NUM_THREADS": t}  # torch's thread count at start-up
        if self.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(self.gpu)
            # the precision probe's timings on a GPU other trials use are not cached as a free GPU's
            env["ARCHSEARCH_GPU_SHARED_BY"] = str(self.sharing)
        elif self.hide_gpus:  # devices=cpu with trainer.device=auto: the CPU, not cuda:0
            env["CUDA_VISIBLE_DEVICES"] = ""
        return env

    def describe(self) -> str:
        where = f"GPU {self.gpu}" if self.gpu is not None else "CPU"
        return f"slot {self.index} ({where}, {len(self.cores)} core{'s' if len(self.cores) != 1 else ''})"


def _cores() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def visible_gpus() -> list[int | str]:
    """The GPUs this process may use, each as a child process must be told it: the entries of
    ``CUDA_VISIBLE_DEVICES`` when set (``2,3``, GPU UUIDs, MIG instances: a child's index 0
    would be the parent's first entry, not physical GPU 0), else the indices 0..n-1."""
    try:
        # torch only when asked which GPUs there are: the sweeper's process, whose trials train in
        # processes of their own (or not at all, in a scored sweep), does not load it otherwise
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return []
    return gpu_entries(os.environ.get("CUDA_VISIBLE_DEVICES"), n)


def gpu_entries(visible: str | None, count: int) -> list[int | str]:
    """``CUDA_VISIBLE_DEVICES`` and the number of GPUs CUDA reports -> how to name each to a child."""
    if visible is None:
        return list(range(count))
    entries = [e.strip() for e in visible.split(",") if e.strip()]
    return [int(e) if e.isdigit() else e for e in entries[:count]]


def plan_slots(n_jobs: int | None, devices: Any, per_device: int, cores: list[int] | None = None,
               gpus: list[int] | None = None) -> list[Slot]:
    """``hydra.sweeper.n_jobs`` / ``devices`` / ``trials_per_device`` -> the slots. Raises ValueError
    (the sweeper turns it into one line) for settings that cannot be honoured."""
    cores = _cores() if cores is None else cores
    if devices in (None, "auto"):
        devs = visible_gpus() if gpus is None else gpus
    elif devices == "cpu" or (isinstance(devices, (list, tuple)) and not devices):
        devs = []
    elif isinstance(devices, (list, tuple)) and all(isinstance(d, int) and d >= 0 for d in devices):
        devs = list(devices)
    else:
        raise ValueError(f"hydra.sweeper.devices: expected auto, cpu or a list of GPU indices like [0, 1]; got {devices!r}")
    if per_device < 1:
        raise ValueError(f"hydra.sweeper.trials_per_device: expected >= 1; got {per_device}")
    capacity = len(devs) * per_device
    n = (capacity or 1) if n_jobs is None else int(n_jobs)
    if n < 1:
        raise ValueError(f"hydra.sweeper.n_jobs: expected >= 1 (or null: one per device slot); got {n}")
    if devs and n > capacity:
        raise ValueError(f"hydra.sweeper.n_jobs: {n} concurrent trials need {n} slots, but devices {devs} x "
                         f"trials_per_device {per_device} give {capacity}; raise trials_per_device or lower n_jobs")
    if isinstance(devices, (list, tuple)) and devs:
        devs = _as_seen(devs, visible_gpus() if gpus is None else gpus)
    share = max(1, len(cores) // n)  # the cores divided between the running trials
    slots = []
    for i in range(n):
        mine = tuple(cores[(i * share) % len(cores):][:share]) or (cores[i % len(cores)],)
        gpu = devs[i // per_device] if devs else None
        sharing = min(per_device, n - (i // per_device) * per_device) if devs else 1
        slots.append(Slot(i, gpu, mine, hide_gpus=devices == "cpu", sharing=sharing))
    return slots


def _as_seen(indices: list[int], seen: list[int | str]) -> list[int | str]:
    """``devices: [0, 2]`` (indices into the GPUs this process sees) -> their CUDA_VISIBLE_DEVICES entries."""
    if any(d >= len(seen) for d in indices):
        raise ValueError(f"hydra.sweeper.devices: {indices} names GPUs this process cannot see; it sees "
                         f"{len(seen)} ({', '.join(map(str, seen)) or 'none'}): use indices below {len(seen)}, or auto")
    return [seen[d] for d in indices]


@dataclass(kw_only=True)
class Running:
    number: int
    slot: Slot
    proc: subprocess.Popen
    job_dir: Path
    started: float
    extra: dict[str, Any] = field(default_factory=dict)  # what the sweeper needs back when it ends


def _child_setup(cores: tuple[int, ...]):
    def setup() -> None:  # runs in the child between fork and exec
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except Exception:
            pass
        if hasattr(os, "sched_setaffinity"):
            try:
                os.sched_setaffinity(0, cores)
            except OSError:
                pass
    return setup


class Pool:
    """Start trial processes on free slots, collect what they return."""

    def __init__(self, slots: list[Slot]):
        self.free = list(slots)
        self.running: dict[int, Running] = {}

    def has_room(self) -> bool:
        return bool(self.free)

    def start(self, number: int, job_dir: Path, **extra) -> Running:
        slot = self.free.pop(0)
        log = open(job_dir / "trial.log", "w")
        try:
            proc = subprocess.Popen([sys.executable, "-m", "archsearch.search.trial_process", str(job_dir)], stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env={**os.environ, **slot.env()}, preexec_fn=_child_setup(slot.cores))
        except BaseException:
            self.free.insert(0, slot)
            raise
        finally:
            log.close()
        r = Running(number=number, slot=slot, proc=proc, job_dir=job_dir, started=time.time(), extra=extra)
        self.running[number] = r
        return r

    def reap(self) -> list[tuple[Running, dict[str, Any]]]:
        """The trials whose process ended since the last call, with their results."""
        done = []
        for n, r in list(self.running.items()):
            if r.proc.poll() is None:
                continue
            del self.running[n]
            self.free.append(r.slot)
            self.free.sort(key=lambda s: s.index)
            done.append((r, read_result(r)))
        return done

    def wait(self, seconds: float) -> None:
        end = time.time() + seconds
        while time.time() < end and all(r.proc.poll() is None for r in self.running.values()):
            time.sleep(0.05)

    def stop_all(self, grace: float = 20.0) -> list[Running]:
        """SIGTERM every running trial (their MLflow runs close as KILLED), SIGKILL after ``grace``."""
        left = list(self.running.values())
        for r in left:
            if r.proc.poll() is None:
                r.proc.send_signal(signal.SIGTERM)
        end = time.time() + grace
        for r in left:
            try:
                r.proc.wait(timeout=max(0.1, end - time.time()))
            except subprocess.TimeoutExpired:
                r.proc.kill()
                r.proc.wait()
        self.running.clear()
        return left


def read_result(r: Running) -> dict[str, Any]:
    path = r.job_dir / "result.json"
    if path.exists():
        try:
            return json.loads(path.read_text())
        except ValueError:
            pass
    code = r.proc.returncode
    how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
    return {"status": "INTERRUPTED" if code < 0 or code >= 128 else "FAIL",
            "error": f"trial process {how} before reporting a result; its log: {r.job_dir / 'trial.log'}"}
