"""The parts that check a device, a GPU above all (``python -m archsearch.bench device=cuda``): whether
the data pipeline keeps the device busy and at how many DataLoader workers (row 7), how many trials
per device a sweep should run (row 8), and that a sweep's trials log their own GPU's system metrics
(row 9). On a CPU (``device=cpu``) the same code runs, which is how the tests keep it working."""

from __future__ import annotations

import os
import statistics
import tempfile

from archsearch.benchmark.figures import spread
from archsearch.benchmark.inputs import auto_model, bench_device, bench_images, model_name
from archsearch.benchmark.search_parts import timed_sweep
from archsearch.config.compose import compose
from archsearch.training.data import Splits, channel_stats
from archsearch.training.job import train
from archsearch.training.precision import probe

__all__ = ["part_slots", "part_system_metrics", "part_workers", "worker_counts"]

# torch, optuna and mlflow are imported where they are used: `python -m archsearch.bench --help` and a
# mistyped option answer without them


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def worker_counts(cores: int) -> list[int]:
    """0, 1, 2, 4, ... DataLoader workers, up to one core short of the machine (the training
    process keeps one)."""
    counts, w = [0, 1], 2
    while w < cores:
        counts.append(w)
        w *= 2
    return [c for c in counts if c == 0 or c < max(cores, 2)]


def part_workers(opts: dict, rows: list, notes: list) -> None:
    """archsearch's training loop end to end (era_s9 on every image, in DataLoader workers) at each
    worker count, against the model step alone at the precision auto chose: the share of the
    step's speed the data pipeline lets through."""
    device = bench_device(opts)
    x, y = bench_images(opts)
    reps, batch = int(opts.get("reps", 3)), int(opts.get("batch", 128))
    spec, chosen, model = auto_model(device, batch, model_name(opts))
    cands = [(chosen.amp_short, chosen.channels_last)]  # the step alone at the precision training uses
    steps = 8 if device.type == "cpu" else 50
    alone = [probe(model, device, cands, batch, spec.input_shape, spec.num_classes, steps=steps)[chosen.label]
             for _ in range(reps)]
    mean, std = channel_stats(x)
    splits = Splits(x, y, x[:256], y[:256], x[:256], y[:256], tuple(f"c{i}" for i in range(10)), mean, std)
    best = None
    for w in worker_counts(_cores()):
        cfg = compose("config", [f"model={model_name(opts)}", "tracking=none", f"trainer.epochs={reps + 1}",
                                 f"trainer.batch_size={batch}", "trainer.progress=false", "trainer.checkpoint=false",
                                 f"trainer.device={device}", f"trainer.workers={w}", "trainer.compile=false",
                                 "aug.cooldown_fraction=0", "trainer.tta=none"])
        with tempfile.TemporaryDirectory() as td:
            res = train(cfg, td, data=splits)
        rates = [h["images_per_s"] for h in res.history[1:]]
        share = statistics.median(rates) / statistics.median(alone)
        best = max(best or (0.0, w), (share, w))
        rows.append((f"7. training end to end, {w} DataLoader worker(s) (images/s)",
                     f"model step alone, {chosen.label}: {spread(alone)}", spread(rates), f"{share:.2f}x"))
    notes.append(f"part 7: {len(x):,} images an epoch, batch {batch}, {reps} measured epochs after 1 warm-up at each "
                 f"worker count, eager (the step alone is eager too); era_s9 per image in the workers (0: in the "
                 f"training process). The ratio is the share of the model step's speed that reaches training: "
                 f"near 1.0x the device is kept busy; best here {best[0]:.2f}x at {best[1]} worker(s).")


def part_slots(opts: dict, rows: list, notes: list) -> None:
    """Trials per hour of the same small sweep with 1, 2 and 4 trials per device (on a CPU: 1, 2, 4
    trials side by side, the cores divided between them)."""
    device = bench_device(opts)
    per = [1, 2, 4]
    results = []
    with tempfile.TemporaryDirectory() as td:
        for k in per:
            if device.type == "cuda":
                slots = [f"hydra.sweeper.devices=[{device.index or 0}]", f"hydra.sweeper.trials_per_device={k}"]
                precision = ["trainer.amp=auto", "trainer.channels_last=auto"]
            else:
                slots, precision = [f"hydra.sweeper.n_jobs={k}", "hydra.sweeper.devices=cpu"], None
            wall, n = timed_sweep({**opts, "device": "auto" if device.type == "cuda" else "cpu"}, td, f"slots{k}",
                                  slots, precision)
            results.append((k, wall, n))
    base = 3600 * results[0][2] / results[0][1]
    for k, wall, n in results:
        rate = 3600 * n / wall
        rows.append((f"8. sweep throughput, {k} trial(s) per {'GPU' if device.type == 'cuda' else 'CPU'} (trials/hour)",
                     f"1 per device: {base:.0f}", f"{rate:.0f} ({n} trials in {wall:.0f} s)", f"{rate / base:.2f}x"))
    notes.append(f"part 8: the smoke space, {opts.get('conc_trials', 8)} trials a sweep of "
                 f"{opts.get('conc_epochs', 2)} epochs on {opts.get('conc_images', 2000)} training images, no pruning; "
                 "process start, data loading, the precision probe and MLflow logging included.")


def part_system_metrics(opts: dict, rows: list, notes: list) -> None:
    """A 2-trial sweep with ``trainer.system_metrics`` on, logged to MLflow: which system metrics
    each trial's run holds (on a GPU: its own GPU's, as gpu_0, and no other GPU's)."""
    import mlflow

    device = bench_device(opts)
    with tempfile.TemporaryDirectory() as td:
        wall, n = timed_sweep({**opts, "conc_trials": 2, "device": str(device)}, td, "sysmetrics",
                              ["hydra.sweeper.devices=" + (f"[{device.index or 0}]" if device.type == "cuda" else "cpu")],
                              extra=["trainer.system_metrics=1"])
        mlflow.set_tracking_uri(f"sqlite:///{td}/mlruns/mlflow.db")
        runs = mlflow.search_runs(experiment_names=["archsearch"], filter_string="tags.trial_number != ''")
        keys = sorted({c[len("metrics.system/"):] for c in runs.columns if c.startswith("metrics.system/")})
        gpu = sorted({k.split("_")[1] for k in keys if k.startswith("gpu_")})
        util = runs.get("metrics.system/gpu_0_utilization_percentage")
    what = (f"GPU metrics of GPU {', '.join(gpu)} in each run" if gpu else "no GPU metrics")
    mean_util = f"; gpu_0 utilisation {util.mean():.0f}% (mean of the trials)" if util is not None else ""
    rows.append(("9. a 2-trial sweep with trainer.system_metrics=1, logged to MLflow", f"{len(runs)} trial runs",
                 f"{len(keys)} system metrics: {what}{mean_util}", ""))
    notes.append(f"part 9: the 2 trials took {wall:.0f} s; system metrics logged: {', '.join(keys) or 'none'}.")
