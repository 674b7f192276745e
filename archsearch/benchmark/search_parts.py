"""The parts that measure the search's machinery: the validator every candidate passes (row 3),
a real sweep's overhead per trial (row 4), and trials per hour at one trial per core (row 6)."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

from archsearch import analyze, build_model, check, load_budget, load_spec
from archsearch.benchmark.figures import spread
from archsearch.config.paths import available
from archsearch.grammar.spec import parse_spec
from archsearch.search.study import open_storage
from archsearch.tracking import make_tracker

__all__ = ["part_concurrency", "part_sweep", "part_validator", "timed_sweep"]

# optuna and mlflow are imported in the functions that use them: `python -m archsearch.bench --help`
# and a mistyped option answer without them


def _long_spec():
    layers = []
    for i in range(28):
        layers.append({"op": "sepconv" if i % 3 == 2 else "conv", "out": 32 + 8 * (i % 4), "d": 2 if i % 5 == 4 else 1,
                       "s": 2 if i in (6, 14, 22) else 1})
    layers += [{"op": "gap"}, {"op": "linear", "out": 10}]
    return parse_spec({"name": "long30", "in_channels": 3, "input_size": 32, "num_classes": 10,
                       "layer_defaults": {"bn": True, "act": "relu"}, "layers": layers})


def part_validator(opts: dict, rows: list, notes: list) -> None:
    """Specs per second through analyze + budget check, against building the nn.Module and
    counting its parameters, for every shipped model and a 30-layer one."""
    budget = load_budget()
    specs = [load_spec(m) for m in available("model")] + [_long_spec()]
    reps = int(opts.get("reps", 3))
    for spec in specs:
        n = 2000
        rates = []
        for r in range(reps + 1):
            t0 = time.perf_counter()
            for _ in range(n):
                check(analyze(spec), budget)
            if r:
                rates.append(n / (time.perf_counter() - t0))
        usual = []
        for r in range(reps + 1):
            t0 = time.perf_counter()
            for _ in range(5):
                sum(p.numel() for p in build_model(spec).parameters())
            if r:
                usual.append(5 / (time.perf_counter() - t0))
        rows.append((f"3. validator: {spec.name} ({len(spec.layers)} layers), specs/s",
                     f"build nn.Module + count: {spread(usual)}", f"analyze + check: {spread(rates)}",
                     f"{statistics.median(rates) / statistics.median(usual):,.0f}x"))
    notes.append("part 3: target >= 10,000 specs/s for analyze + budget check.")


def part_sweep(opts: dict, rows: list, notes: list) -> None:
    """A real sweep (the archsearch sweeper, MLflow on SQLite, journal storage) whose trials
    train 1 epoch on 64 synthetic images; overhead = trial wall time minus its training loop."""
    import optuna

    trials = int(opts.get("trials", 200))
    with tempfile.TemporaryDirectory() as td:
        cmd = [sys.executable, "-m", "archsearch.train", "-m", "sweep=smoke", f"hydra.sweeper.n_trials={trials}",
               "hydra.sweeper.max_rejections_in_a_row=100000", "hydra.sweeper.pruner={name:none}",
               "hydra.sweeper.max_failures=100000", "model.wide=choice(32,48,56,64)", "data.n_train=192", "data.val_size=64", "data.n_test=64",
               "trainer.epochs=1", "trainer.tta=none", "hydra.sweep.dir=multirun/bench"]
        t0 = time.time()
        # a fresh precision cache: the probe of each architecture is part of the measured overhead
        env = {**os.environ, "OMP_NUM_THREADS": "1", "ARCHSEARCH_CACHE_DIR": f"{td}/cache"}
        p = subprocess.run(cmd, cwd=td, capture_output=True, text=True, env=env)
        wall = time.time() - t0
        if p.returncode:
            raise RuntimeError(p.stderr[-2000:])
        st = optuna.load_study(study_name="smoke", storage=open_storage(f"journal:{td}/mlruns/optuna/smoke.journal"))
        tracker = make_tracker({"uri": f"sqlite:///{td}/mlruns/mlflow.db"})
        ts = sorted(st.trials, key=lambda t: t.number)
        over = []
        prev_end = None
        for t in ts:
            end = t.datetime_complete
            start = prev_end or t.datetime_start
            total = (end - start).total_seconds()
            rid = t.user_attrs.get("mlflow_run_id")
            train_s = 0.0
            if rid and t.user_attrs.get("state") == "COMPLETE":
                train_s = tracker.metric_total(rid, "epoch_seconds")
            over.append(total - train_s)
            prev_end = end
    k = max(1, min(10, len(over) // 4))
    first, last = over[1:k + 1], over[-k:]
    rows.append((f"4. sweep overhead per trial (s), {len(over)} trials", f"trials 2-{k + 1}: {spread(first, digits=2)}",
                 f"last {k}: {spread(last, digits=2)}", f"growth {statistics.median(last) / statistics.median(first):.2f}x"))
    notes.append(f"part 4: {len(over)} trials in {wall:.0f}s wall; overhead = time between consecutive trial "
                 "completions minus the trial's training-loop seconds (compose, budget gate, launch, data cache, "
                 "model build, MLflow run with params/artifacts, evaluation, Optuna storage, and the precision probe "
                 "the first time each architecture is seen: the smoke space has 8, 4 widths x 2 dropout rates).")


def timed_sweep(opts: dict, td: str, name: str, slots: list[str], precision: list[str] | None = None,
                extra: list[str] = ()) -> tuple[float, int]:
    """One archsearch sweep of small real trials (the smoke space, no pruning) on the option ``device``
    -> (wall seconds, trained trials). ``slots``: the sweeper's n_jobs / devices / trials_per_device;
    ``precision``: the trials' trainer.amp / channels_last (default fp32 channels_last)."""
    import optuna

    n, images = int(opts.get("conc_trials", 8)), int(opts.get("conc_images", 2000))
    held = min(1000, images)  # validation and test images
    if opts.get("data", "synthetic") == "folder":
        data = ["data=folder", f"data.root={opts['data.root']}", f"data.limit_train={images}",
                f"data.val_size={held}", f"data.limit_test={held}"]
    else:
        data = [f"data.n_train={images + held}", f"data.val_size={held}", f"data.n_test={held}"]
    cmd = [sys.executable, "-m", "archsearch.train", "-m", "sweep=smoke", *data, f"hydra.sweeper.study_name={name}",
           f"hydra.sweeper.n_trials={n}", *slots, "hydra.sweeper.pruner={name:none}",
           "model.wide=choice(32,48,56,64)", f"trainer.epochs={int(opts.get('conc_epochs', 2))}", "trainer.tta=none",
           "trainer.batch_size=128", *(precision or ["trainer.amp=off", "trainer.channels_last=true"]),
           f"trainer.device={opts.get('device', 'auto')}", f"hydra.sweep.dir=multirun/{name}", *extra]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    t0 = time.time()
    p = subprocess.run(cmd, cwd=td, capture_output=True, text=True, env=env)
    wall = time.time() - t0
    if p.returncode:
        raise RuntimeError(p.stderr[-2000:])
    st = optuna.load_study(study_name=name, storage=open_storage(f"journal:{td}/mlruns/optuna/{name}.journal"))
    return wall, sum(t.user_attrs.get("state") in ("COMPLETE", "PRUNED") for t in st.trials)


def part_concurrency(opts: dict, rows: list, notes: list) -> None:
    """Trials per hour of the same small real sweep with one trial at a time (all cores) and with
    one trial per core (``hydra.sweeper.n_jobs`` = cores, each pinned to its core, one thread)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as td:
        # the CPU's cores, whatever GPUs the machine has (on a GPU machine: part 8, trials per device)
        w1, n1 = timed_sweep({**opts, "device": "cpu"}, td, "conc1", ["hydra.sweeper.n_jobs=1", "hydra.sweeper.devices=cpu"])
        wn, nn = timed_sweep({**opts, "device": "cpu"}, td, f"conc{cores}",
                             [f"hydra.sweeper.n_jobs={cores}", "hydra.sweeper.devices=cpu"])
    r1, rn = 3600 * n1 / w1, 3600 * nn / wn
    rows.append((f"6. sweep throughput (trials/hour), {n1} trials", f"n_jobs=1, {cores} threads: {r1:.0f}",
                 f"n_jobs={cores}, 1 thread each: {rn:.0f}", f"{rn / r1:.2f}x"))
    notes.append(f"part 6: the smoke space ({opts.get('conc_epochs', 2)} epochs on {opts.get('conc_images', 2000)} "
                 f"training images, as many val and test images up to 1,000, fp32 channels_last, no pruning); wall {w1:.0f}s vs {wn:.0f}s, "
                 "process start, data loading and MLflow logging included.")
