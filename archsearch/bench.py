"""``python -m archsearch.bench [parts=train,breakdown,validator,sweep,memory] [key=value ...]``

Side-by-side measurements in one process, on one machine, on the same data; each figure is
the median of several repetitions after a warm-up, with its spread (min-max). Writes the
table, with machine, device, torch version and date, to ``BENCHMARKS.md``.

Options (key=value):
  parts        comma list of: train, breakdown, compile, validator, sweep, concurrency, memory (default: all)
  model        the network of parts train, breakdown, compile (default dilated_sep; any conf/model name)
  data         synthetic (default) | folder;  data.root=PATH for folder (e.g. the CIFAR-10 copy)
  images       training images per measured epoch (default 4096)
  reps         measured repetitions after one warm-up (default 3)
  batch        batch size for both loops (default 128)
  workers      DataLoader workers for both loops in part train (default auto, as training uses)
  compile      part train: auto (default: what trainer.compile=auto picks for a run of run_images images,
               probing compiled vs eager if that run is long enough) | true | false
  run_images   part train: the run that auto decides for, and row 1b projects (default 900000: 20 epochs
               of CIFAR-10's 45,000 training images)
  trials       sweep part: trials in the overhead sweep (default 200)
  conc_trials  concurrency part: trials per sweep (default 8); conc_images training images (default 2000;
               as many validation and test images, up to 1000),
               conc_epochs epochs per trial (default 2)
  mem_images   memory part: training images (default 50000, CIFAR-10's size); mem_workers (default 2)
  out          where to write the table (default BENCHMARKS.md; out=- prints only)
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "reference_epoch"]

PARTS = ("train", "breakdown", "compile", "validator", "sweep", "concurrency", "memory")


def _med(xs: Sequence[float]) -> tuple[float, float, float]:
    return statistics.median(xs), min(xs), max(xs)


def _spread(xs: Sequence[float], unit: str = "", digits: int = 0) -> str:
    m, lo, hi = _med(xs)
    f = f"{{:,.{digits}f}}"
    return f"{f.format(m)}{unit} ({f.format(lo)}-{f.format(hi)})"


def _model(opts: dict) -> str:
    return str(opts.get("model", "dilated_sep"))


# ------------------------------------------------------------------ data
def _images(opts: dict) -> tuple[Any, Any]:
    from archsearch.training.data import load_data, synthetic

    n = int(opts.get("images", 4096))
    if opts.get("data", "synthetic") == "folder":
        s = load_data({"source": "folder", "root": opts["data.root"], "val_size": 0})
        return s.x_train[:n], s.y_train[:n]
    return synthetic(n, seed=0)


# ------------------------------------------------------------------ the reference loop
class _RefDataset:
    """How the assignment's notebook feeds data: per-sample albumentations on a numpy image,
    Normalize + ToTensorV2 on the host, in a Dataset."""

    def __init__(self, x, y, tf):
        self.x, self.y, self.tf = x, y, tf

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.tf(image=self.x[i])["image"], int(self.y[i])


def _era_s9(mean_px):
    """The shipped default augmentation (conf/aug/era_s9.yaml), as training builds it."""
    from omegaconf import OmegaConf

    from archsearch.config.compose import compose
    from archsearch.training.augment import build_pipeline

    return build_pipeline(OmegaConf.to_container(compose("config", []).aug, resolve=True)["train"], mean_px)


def _reference_transform(mean, std):
    """The same transforms and probabilities as ours, then Normalize + ToTensorV2 per sample."""
    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    ours = _era_s9([m * 255 for m in mean])
    return A.Compose([*ours.transforms, A.Normalize(mean=mean, std=std), ToTensorV2()])


def reference_epoch(model, x, y, batch: int, workers: int, device) -> float:
    """One epoch the reference's way (fp32, NCHW, log_softmax + NLL, .item() every step).
    Returns images/s."""
    import torch
    import torch.nn.functional as F

    from archsearch.training.data import channel_stats

    mean, std = channel_stats(x)
    loader = torch.utils.data.DataLoader(_RefDataset(x, y, _reference_transform(mean, std)), batch_size=batch,
                                         shuffle=True, num_workers=workers, pin_memory=device.type == "cuda")
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    seen, t0 = 0, time.perf_counter()
    for data, target in loader:
        data, target = data.to(device), target.to(device)
        opt.zero_grad()
        out = F.log_softmax(model(data), dim=-1)
        loss = F.nll_loss(out, target)
        loss.backward()
        opt.step()
        _ = loss.item()  # the reference prints the loss every step (tqdm description)
        seen += len(target)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - t0)


# ------------------------------------------------------------------ parts
def part_train(opts: dict, rows: list, notes: list) -> None:
    """archsearch's real training path (archsearch.train.train) vs the reference loop."""

    from archsearch import build_model, load_spec
    from archsearch.config.compose import compose
    from archsearch.training.batches import worker_count as _workers
    from archsearch.training.data import Splits, channel_stats
    from archsearch.training.job import train
    from archsearch.training.precision import pick_device

    x, y = _images(opts)
    reps, batch = int(opts.get("reps", 3)), int(opts.get("batch", 128))
    device = pick_device("auto")
    workers = _workers(opts.get("workers", "auto"), device)
    mean, std = channel_stats(x)
    splits = Splits(x, y, x[:256], y[:256], x[:256], y[:256], tuple(f"c{i}" for i in range(10)), mean, std)
    # ours: the real loop; the reference runs one epoch after each of ours (from the epoch hook, outside
    # our timed loop), so each pair compared is measured back to back and drift hits both alike; the
    # first epoch of each is the warm-up
    cfg = compose("config", [f"model={_model(opts)}", "tracking=none", f"trainer.epochs={reps + 1}",
                             f"trainer.batch_size={batch}", "trainer.progress=false", "trainer.checkpoint=false",
                             f"trainer.workers={opts.get('workers', 'auto')}",
                             # every measured epoch does the full era_s9 work, as the reference does
                             "aug.cooldown_fraction=0", "trainer.tta=none"])
    model = build_model(load_spec(_model(opts))).to(device)
    run_images = int(opts.get("run_images", 900_000))
    compiled, why, compile_s = _compile_for_run(str(opts.get("compile", "auto")), device, batch, _model(opts),
                                                run_images)
    cfg.trainer.compile = compiled  # the warm-up epoch compiles (if at all): not in the measured epochs
    ref: list[float] = []

    def reference(epoch: int, val_acc: float) -> None:
        ref.append(reference_epoch(model, x, y, batch, workers, device))

    with tempfile.TemporaryDirectory() as td:
        res = train(cfg, td, epoch_hook=reference, data=splits)
    ours, ref = [h["images_per_s"] for h in res.history[1:]], ref[1:]
    ratio = [o / r for o, r in zip(ours, ref)]
    rows.append(("1. training, end to end (images/s)", f"reference loop: {_spread(ref)}", f"archsearch: {_spread(ours)}",
                 f"**{statistics.median(ratio):.2f}x** ({min(ratio):.2f}-{max(ratio):.2f})"))
    # the run at the paired ratio of row 1 (robust to the machine's drift), plus the compile it pays once
    ref_min = run_images / statistics.median(ref) / 60
    ours_min = ref_min / statistics.median(ratio) + compile_s / 60
    rows.append((f"1b. a run of {run_images:,} images, projected from row 1 (minutes)", f"reference loop: {ref_min:,.1f}",
                 f"archsearch: {ours_min:,.1f}" + (f" ({compile_s:.0f} s of it compiling)" if compile_s else ""),
                 f"{ref_min / ours_min:.2f}x"))
    notes.append(f"part 1: {len(x):,} images/epoch, batch {batch}, {workers} DataLoader worker(s) for both, "
                 f"{reps} measured epochs after 1 warm-up, alternating (one of ours, one of the reference); "
                 "archsearch with its defaults (trainer.amp=auto, "
                 f"trainer.channels_last=auto chose {res.precision}; trainer.compile={compiled}: {why}), "
                 "uint8 batches normalised on the device; reference: the same era_s9 transforms then "
                 "Normalize+ToTensorV2 per sample, fp32, NCHW, "
                 "log_softmax+NLL, .item() every step.")


def _compile_for_run(setting: str, device, batch: int, name: str, images: int) -> tuple[str, str, float]:
    """Part 1's ``trainer.compile``: auto -> what ``auto`` picks for a run of ``images`` images
    (its probe, or its cache) -> (true/false, why, the compile seconds a run pays)."""
    from archsearch.grammar.spec import spec_hash
    from archsearch.training.compilation import choose_compile

    if setting != "auto":
        return setting, "set", 0.0
    spec, precision, model = _auto_model(device, batch, name)
    choice, _ = choose_compile("auto", model, precision, spec_hash(spec), batch, spec.input_shape, spec.num_classes,
                               images)
    why = f"auto for a run of {images:,} images chose {choice.describe()}"
    return str(choice.compiled).lower(), why, (choice.compile_s or 0.0) if choice.compiled else 0.0


def _auto_model(device, batch: int, name: str):
    """Model ``name`` as a run with trainer.amp=auto / channels_last=auto has it here -> (spec,
    precision (the cached probe), the model on the device in the chosen memory layout)."""
    import torch
    from omegaconf import OmegaConf

    from archsearch import build_model, load_spec
    from archsearch.grammar.spec import spec_hash
    from archsearch.training.precision import choose_precision

    spec = load_spec(name)
    model = build_model(spec)
    precision = choose_precision(OmegaConf.create({"amp": "auto", "channels_last": "auto"}), device, model,
                                 spec_hash(spec), batch, spec.input_shape, spec.num_classes)
    fmt = torch.channels_last if precision.channels_last else torch.contiguous_format
    return spec, precision, model.to(device).to(memory_format=fmt)


def part_breakdown(opts: dict, rows: list, notes: list) -> None:
    """Model step alone (tensors already on the device) for every precision/layout candidate
    the probe times; augmentation rate."""

    from archsearch import build_model, load_spec
    from archsearch.training.precision import candidates, pick_device, probe

    device = pick_device("auto")
    reps, batch = int(opts.get("reps", 3)), int(opts.get("batch", 128))
    steps = 8 if device.type == "cpu" else 50
    spec = load_spec(_model(opts))
    cands = candidates(device, "auto", None)
    runs = [probe(build_model(spec), device, cands, batch, spec.input_shape, spec.num_classes, steps=steps)
            for _ in range(reps)]
    base = [r["fp32 NCHW"] for r in runs]
    chosen = _auto_model(device, batch, _model(opts))[1]
    for label in runs[0]:
        if label == "fp32 NCHW":
            continue
        rates = [r[label] for r in runs]
        mark = " (auto's choice)" if chosen.label == label else ""
        rows.append((f"2a. model step alone, {label}{mark} (images/s)", f"fp32 NCHW: {_spread(base)}", _spread(rates),
                     f"{statistics.median(rates) / statistics.median(base):.2f}x"))
    x, _ = _images({**opts, "images": min(int(opts.get("images", 4096)), 4096)})
    pipe = _era_s9([125.0, 123.0, 114.0])
    rates = []
    for r in range(reps + 1):
        pipe.set_random_seed(r)
        t0 = time.perf_counter()
        for im in x:
            pipe(image=im)
        if r:
            rates.append(len(x) / (time.perf_counter() - t0))
    rows.append(("2b. era_s9 augmentation, one worker (images/s)", "", _spread(rates), ""))
    notes.append("part 2: the full-pipeline figure is part 1's archsearch column; the difference to 2a "
                 "is the data pipeline's share (loading, augmentation, host-to-device copy).")


def part_compile(opts: dict, rows: list, notes: list) -> None:
    """torch.compile: what it costs up front and what it gains per step (the probe of
    ``trainer.compile=auto``, on a cold compile), so you know from how many images it pays off."""
    import torch
    import torch._inductor.config as inductor_config

    from archsearch.training.compilation import probe_compile
    from archsearch.training.precision import pick_device

    device = pick_device("auto")
    batch = int(opts.get("batch", 128))
    spec, chosen, model = _auto_model(device, batch, _model(opts))
    torch._dynamo.reset()
    cold = inductor_config.force_disable_caches
    inductor_config.force_disable_caches = True  # a cold compile, as on a machine that never compiled this model
    try:
        _, rates, compile_s = probe_compile(model, chosen, batch, spec.input_shape, spec.num_classes,
                                            steps=10 if device.type == "cpu" else 50)
    except Exception as e:  # no C++ compiler, an op inductor cannot lower: the other parts still report
        first = (str(e).strip().splitlines() or [""])[0][:160]
        rows.append((f"2c. torch.compile, {chosen.label}", "not measured", f"compiling failed: {type(e).__name__}",
                     first))
        return
    finally:
        inductor_config.force_disable_caches = cold
    eager, compiled = rates["eager"], rates["compiled"]
    gain = 1 / eager - 1 / compiled if eager and compiled else 0.0  # seconds saved per image
    breakeven = compile_s / gain if gain > 0 else float("inf")
    rows.append((f"2c. torch.compile, {chosen.label} (model step, images/s)", f"eager: {eager:,.0f}",
                 f"compiled: {compiled:,.0f} after {compile_s:.0f}s compiling",
                 f"{compiled / eager:.2f}x; pays off after "
                 + (f"{breakeven:,.0f} images" if math.isfinite(breakeven) else "never")))
    notes.append("part 2c: the compile probe of trainer.compile=auto (cold compile; then 10 steps each, eager "
                 "and compiled interleaved, medians); break-even = compile time / per-image time saved. auto "
                 "compiles a run when it is faster by 5% and the run's images save more than the compile costs.")


def _long_spec():
    from archsearch.grammar.spec import parse_spec

    layers = []
    for i in range(28):
        layers.append({"op": "sepconv" if i % 3 == 2 else "conv", "out": 32 + 8 * (i % 4), "d": 2 if i % 5 == 4 else 1,
                       "s": 2 if i in (6, 14, 22) else 1})
    layers += [{"op": "gap"}, {"op": "linear", "out": 10}]
    return parse_spec({"name": "long30", "in_channels": 3, "input_size": 32, "num_classes": 10,
                       "layer_defaults": {"bn": True, "act": "relu"}, "layers": layers})


def part_validator(opts: dict, rows: list, notes: list) -> None:
    from archsearch import analyze, build_model, check, load_budget, load_spec
    from archsearch.config.paths import available

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
                     f"build nn.Module + count: {_spread(usual)}", f"analyze + check: {_spread(rates)}",
                     f"{statistics.median(rates) / statistics.median(usual):,.0f}x"))
    notes.append("part 3: target >= 10,000 specs/s for analyze + budget check.")


def part_sweep(opts: dict, rows: list, notes: list) -> None:
    """A real sweep (the archsearch sweeper, MLflow on SQLite, journal storage) whose trials
    train 1 epoch on 64 synthetic images; overhead = trial wall time minus its training loop."""
    import optuna
    from mlflow.tracking import MlflowClient

    from archsearch.search.study import open_storage

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
        client = MlflowClient(f"sqlite:///{td}/mlruns/mlflow.db")
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
                train_s = sum(m.value for m in client.get_metric_history(rid, "epoch_seconds"))
            over.append(total - train_s)
            prev_end = end
    k = max(1, min(10, len(over) // 4))
    first, last = over[1:k + 1], over[-k:]
    rows.append((f"4. sweep overhead per trial (s), {len(over)} trials", f"trials 2-{k + 1}: {_spread(first, digits=2)}",
                 f"last {k}: {_spread(last, digits=2)}", f"growth {statistics.median(last) / statistics.median(first):.2f}x"))
    notes.append(f"part 4: {len(over)} trials in {wall:.0f}s wall; overhead = time between consecutive trial "
                 "completions minus the trial's training-loop seconds (compose, budget gate, launch, data cache, "
                 "model build, MLflow run with params/artifacts, evaluation, Optuna storage, and the precision probe "
                 "the first time each architecture is seen: the smoke space has 8, 4 widths x 2 dropout rates).")


def _timed_sweep(opts: dict, n_jobs: int, td: str) -> tuple[float, int]:
    """One archsearch sweep of small real trials -> (wall seconds, trained trials)."""
    import optuna

    from archsearch.search.study import open_storage

    n, images = int(opts.get("conc_trials", 8)), int(opts.get("conc_images", 2000))
    held = min(1000, images)  # validation and test images
    if opts.get("data", "synthetic") == "folder":
        data = ["data=folder", f"data.root={opts['data.root']}", f"data.limit_train={images}",
                f"data.val_size={held}", f"data.limit_test={held}"]
    else:
        data = [f"data.n_train={images + held}", f"data.val_size={held}", f"data.n_test={held}"]
    name = f"conc{n_jobs}"
    cmd = [sys.executable, "-m", "archsearch.train", "-m", "sweep=smoke", *data, f"hydra.sweeper.study_name={name}",
           f"hydra.sweeper.n_trials={n}", f"hydra.sweeper.n_jobs={n_jobs}", "hydra.sweeper.pruner={name:none}",
           "model.wide=choice(32,48,56,64)", f"trainer.epochs={int(opts.get('conc_epochs', 2))}", "trainer.tta=none",
           "trainer.batch_size=128", "trainer.amp=off", "trainer.channels_last=true", f"hydra.sweep.dir=multirun/{name}"]
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
        w1, n1 = _timed_sweep(opts, 1, td)
        wn, nn = _timed_sweep(opts, cores, td)
    r1, rn = 3600 * n1 / w1, 3600 * nn / wn
    rows.append((f"6. sweep throughput (trials/hour), {n1} trials", f"n_jobs=1, {cores} threads: {r1:.0f}",
                 f"n_jobs={cores}, 1 thread each: {rn:.0f}", f"{rn / r1:.2f}x"))
    notes.append(f"part 6: the smoke space ({opts.get('conc_epochs', 2)} epochs on {opts.get('conc_images', 2000)} "
                 f"training images, as many val and test images up to 1,000, fp32 channels_last, no pruning); wall {w1:.0f}s vs {wn:.0f}s, "
                 "process start, data loading and MLflow logging included.")


_MEM_CHILD = r"""
import json, os, sys, time, threading
from archsearch.config.compose import compose
from archsearch.training.data import Splits, synthetic, channel_stats
from archsearch.training.job import train
import tempfile
x, y = synthetic(%d, seed=0)
mean, std = channel_stats(x)
s = Splits(x, y, x[:1000], y[:1000], x[:1000], y[:1000], tuple(f"c{i}" for i in range(10)), mean, std)
cfg = compose("config", ["tracking=none", "trainer.epochs=1", "trainer.progress=false", "trainer.checkpoint=false",
                         "trainer.workers=%d", "trainer.tta=none", "trainer.batch_size=%d"])
peak = {}
def rss_tree():
    me = os.getpid()
    pids = [me] + [int(p) for p in open(f"/proc/{me}/task/{me}/children").read().split()]
    out = {}
    for p in pids:
        try:
            r = {}
            for line in open(f"/proc/{p}/smaps_rollup"):
                k, v = line.split(":", 1)
                if k in ("Rss", "Pss", "Private_Clean", "Private_Dirty"):
                    r[k] = int(v.split()[0]) / 1024
            out[p] = r
        except OSError:
            pass
    return out
stop = False
def watch():
    while not stop:
        t = rss_tree()
        tot_rss = sum(v.get("Rss", 0) for v in t.values())
        tot_pss = sum(v.get("Pss", 0) for v in t.values())
        workers = [v for p, v in t.items() if p != os.getpid()]
        if tot_rss > peak.get("rss", 0):
            peak.update(rss=tot_rss, pss=tot_pss, n=len(t),
                        worker_private=max([w.get("Private_Clean", 0) + w.get("Private_Dirty", 0) for w in workers] or [0]),
                        worker_rss=max([w.get("Rss", 0) for w in workers] or [0]))
        time.sleep(0.2)
th = threading.Thread(target=watch, daemon=True); th.start()
train(cfg, tempfile.mkdtemp(), data=s)
stop = True; th.join()
peak["dataset_mb"] = x.nbytes / 2**20
print(json.dumps(peak))
"""


def part_memory(opts: dict, rows: list, notes: list) -> None:
    workers = int(opts.get("mem_workers", 2))
    n = int(opts.get("mem_images", 50_000))
    batch = int(opts.get("batch", 128))
    p = subprocess.run([sys.executable, "-c", _MEM_CHILD % (n, workers, batch)], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=3600)
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


def _machine() -> str:
    import torch

    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    try:
        flags = set(next(ln for ln in open("/proc/cpuinfo") if ln.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        flags = set()
    native = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    bf16 = f"native bf16 ({', '.join(native)})" if native else "no native bf16"
    limits = [f"{k}={os.environ[k]}" for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY") if os.environ.get(k)]
    if limits:
        bf16 += f", limited by {' '.join(limits)}"
    return (f"{cpu}, {bf16}; device {dev}; torch {torch.__version__}; python {platform.python_version()}; "
            f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return 0
    opts: dict[str, Any] = {}
    for a in argv:
        k, sep, v = a.partition("=")
        if not sep:
            print(f"error: expected key=value, got {a!r}; see --help", file=sys.stderr)
            return 2
        opts[k] = v
    parts = [p for p in str(opts.get("parts", ",".join(PARTS))).split(",") if p]
    bad = [p for p in parts if p not in PARTS]
    if bad:
        print(f"error: parts: unknown part {bad[0]!r}; choose from {', '.join(PARTS)}", file=sys.stderr)
        return 2
    from archsearch.config.paths import available

    if _model(opts) not in available("model"):
        print(f"error: model: unknown model {_model(opts)!r}; choose one of {', '.join(available('model'))}",
              file=sys.stderr)
        return 2
    from archsearch.errors import ConfigError
    from archsearch.training.compilation import compile_setting

    try:
        compile_setting(opts.get("compile", "auto"))
    except ConfigError as e:  # not a mode, or true without a C++ compiler
        print(f"error: {str(e).replace('trainer.compile', 'compile', 1)}", file=sys.stderr)
        return 2
    if opts.get("data", "synthetic") not in ("synthetic", "folder"):
        print(f"error: data: unknown data {opts['data']!r}; choose one of synthetic, folder", file=sys.stderr)
        return 2
    if opts.get("data") == "folder" and not opts.get("data.root"):
        print("error: data.root: required with data=folder", file=sys.stderr)
        return 2
    import logging

    logging.disable(logging.INFO)
    rows: list = []
    notes: list = []
    fns: dict[str, Callable] = {"train": part_train, "breakdown": part_breakdown, "compile": part_compile,
                                "validator": part_validator,
                                "sweep": part_sweep, "concurrency": part_concurrency, "memory": part_memory}
    for p in parts:
        t0 = time.time()
        print(f"bench: {p} ...", file=sys.stderr, flush=True)
        fns[p](opts, rows, notes)
        print(f"bench: {p} done in {time.time() - t0:.0f}s: {rows[-1]}", file=sys.stderr, flush=True)
    table = ["| measurement | baseline | archsearch | ratio |", "|---|---|---|---|"]
    table += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    data = "synthetic images" if opts.get("data", "synthetic") == "synthetic" else f"image folder {opts['data.root']}"
    text = "\n".join([
        "# Benchmarks", "",
        "Written by `python -m archsearch.bench " + " ".join(argv) + "`. Each cell: median (min-max) of the "
        "measured repetitions after a warm-up; every comparison ran side by side in one invocation.", "",
        f"- machine: {_machine()}", f"- data: {data}",
        f"- model (parts train, breakdown, compile): {_model(opts)}", "",
        *table, "", *[f"- {n}" for n in notes], ""])
    print(text)
    out = opts.get("out", "BENCHMARKS.md")
    if out != "-":
        Path(out).write_text(text)
        print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from archsearch import cli

    cli.run(main)
