"""Part 5: peak memory of a training process and its DataLoader workers.

The training runs in a child process, ``python -m archsearch.benchmark.memory IMAGES WORKERS
BATCH``, so that the benchmark's own memory is not counted: it trains one epoch on that many
synthetic CIFAR-sized images while :class:`PeakMemoryWatcher` samples the process tree's memory
from ``/proc`` every 0.2 s and keeps the sample with the largest total RSS. The child's last line
on stdout is that peak, as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading

from archsearch.config.compose import compose
from archsearch.training.data import Splits, channel_stats, synthetic
from archsearch.training.job import train

__all__ = ["PeakMemoryWatcher", "measure_training_peak", "part_memory", "process_tree_memory"]

_FIELDS = ("Rss", "Pss", "Private_Clean", "Private_Dirty")


def process_tree_memory() -> dict[int, dict[str, float]]:
    """This process and its children -> {pid: {Rss, Pss, Private_Clean, Private_Dirty} in MiB}
    (a child that ended between the listing and the reading is left out)."""
    me = os.getpid()
    pids = [me] + [int(p) for p in open(f"/proc/{me}/task/{me}/children").read().split()]
    out = {}
    for p in pids:
        try:
            r = {}
            for line in open(f"/proc/{p}/smaps_rollup"):
                k, v = line.split(":", 1)
                if k in _FIELDS:
                    r[k] = int(v.split()[0]) / 1024
            out[p] = r
        except OSError:
            pass
    return out


class PeakMemoryWatcher:
    """While the ``with`` block runs, a thread samples :func:`process_tree_memory` every
    ``interval`` seconds; :attr:`peak` is the sample with the largest total RSS: ``rss`` and
    ``pss`` of the tree, ``n`` processes, and the largest worker's ``worker_rss`` and
    ``worker_private`` (unshared) memory, in MiB."""

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.peak: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> PeakMemoryWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def _sample(self) -> None:
        t = process_tree_memory()
        tot_rss = sum(v.get("Rss", 0) for v in t.values())
        tot_pss = sum(v.get("Pss", 0) for v in t.values())
        workers = [v for p, v in t.items() if p != os.getpid()]
        if tot_rss > self.peak.get("rss", 0):
            self.peak.update(rss=tot_rss, pss=tot_pss, n=len(t),
                             worker_private=max([w.get("Private_Clean", 0) + w.get("Private_Dirty", 0)
                                                 for w in workers] or [0]),
                             worker_rss=max([w.get("Rss", 0) for w in workers] or [0]))


def measure_training_peak(images: int, workers: int, batch: int) -> dict[str, float]:
    """One epoch on ``images`` synthetic images with ``workers`` DataLoader workers, watched ->
    the peak (see :class:`PeakMemoryWatcher`) and ``dataset_mb``, the training images' size."""
    x, y = synthetic(images, seed=0)
    mean, std = channel_stats(x)
    s = Splits(x, y, x[:1000], y[:1000], x[:1000], y[:1000], tuple(f"c{i}" for i in range(10)), mean, std)
    cfg = compose("config", ["tracking=none", "trainer.epochs=1", "trainer.progress=false", "trainer.checkpoint=false",
                             f"trainer.workers={workers}", "trainer.tta=none", f"trainer.batch_size={batch}"])
    with PeakMemoryWatcher() as watcher, tempfile.TemporaryDirectory() as out:
        train(cfg, out, data=s)
    return {**watcher.peak, "dataset_mb": x.nbytes / 2**20}


def part_memory(opts: dict, rows: list, notes: list) -> None:
    """Peak memory of one training epoch on ``mem_images`` images with ``mem_workers`` workers,
    measured in a child process; whether the workers share the decoded images or copy them."""
    workers = int(opts.get("mem_workers", 2))
    n = int(opts.get("mem_images", 50_000))
    batch = int(opts.get("batch", 128))
    p = subprocess.run([sys.executable, "-m", "archsearch.benchmark.memory", str(n), str(workers), str(batch)],
                       capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=3600)
    if p.returncode:
        raise RuntimeError(p.stderr[-2000:])
    m = json.loads(p.stdout.strip().splitlines()[-1])
    rows.append((f"5. peak memory, {n:,} CIFAR-sized images, {workers} workers (MB)",
                 f"dataset {m['dataset_mb']:.0f}; per worker RSS {m['worker_rss']:.0f}, private {m['worker_private']:.0f}",
                 f"process tree RSS {m['rss']:.0f}, PSS {m['pss']:.0f}",
                 "shared" if m["worker_private"] < 0.5 * m["dataset_mb"] else "COPIED per worker"))
    notes.append("part 5: RSS counts shared pages once per process; PSS splits them between the processes that "
                 "share them, so PSS is the tree's real footprint. A worker's private (unshared) memory far below "
                 "the dataset size shows the decoded uint8 arrays are shared with the workers (fork, copy-on-write), "
                 "not copied.")


if __name__ == "__main__":  # the child process of part_memory
    images, workers, batch = (int(a) for a in sys.argv[1:4])
    print(json.dumps(measure_training_peak(images, workers, batch)))
