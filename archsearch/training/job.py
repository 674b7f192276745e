"""One training run, from a composed config to a :class:`TrainResult`.

    gate (spec, analysis, budget: refuse here, nothing loaded)
      -> setup (seed, device, data, augmentation, model, precision) -> engine
      -> MLflow run: epochs (train, validate, checkpoint, pruning hook) -> test -> artifacts

``train(cfg, out_dir)`` is what the CLI, the sweeper's jobs and the benchmark run;
``fit(overrides=[...])`` is the same from a notebook.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import random
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archsearch.config.gate import gate
from archsearch.errors import ConfigError
from archsearch.grammar.analysis import Analysis
from archsearch.grammar.spec import ModelSpec, spec_hash
from archsearch.training import checkpoint
from archsearch.training.engine import Engine, TrainState

__all__ = ["TrainResult", "fit", "train"]

log = logging.getLogger("archsearch")


@dataclass
class TrainResult:
    val_acc: float  # best validation accuracy (what sweeps optimise)
    test_acc: float | None
    test_loss: float | None
    epochs: int
    params: int
    rf: int
    macs: int
    seconds: float
    run_id: str | None = None
    history: list[dict] = field(default_factory=list)
    precision: str = ""  # what the run computed in, and why


def fit(cfg: Any = None, overrides: Sequence[str] = (), out_dir: str | Path | None = None, **kw) -> TrainResult:
    """Train from a notebook: ``fit(overrides=["model=compact", "trainer.epochs=5"])`` or
    ``fit(cfg)`` with a composed config. Same run, same MLflow logging and the same result
    as ``python -m archsearch.train``; output under ``outputs/fit/<time>_<model>/`` unless
    ``out_dir`` is given."""
    from archsearch.config.compose import compose

    if cfg is None:
        cfg = compose("config", list(overrides))
    elif overrides:
        raise ConfigError("fit: pass either a composed cfg or overrides, not both")
    if out_dir is None:
        stamp = time.strftime("%Y-%m-%d/%H-%M-%S") + f"-{int(time.time() * 1e6) % 1_000_000:06d}"
        out_dir = Path("outputs") / "fit" / f"{stamp}_{cfg.model.name}"
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    return train(cfg, out_dir, **kw)


# ------------------------------------------------------------------ setup
@dataclass
class _Setup:
    spec: ModelSpec
    analysis: Analysis
    data: Any
    engine: Engine
    epochs: int
    tta: str
    out: Path
    base_dir: Path
    pipeline: Any
    spec_hash: str


def _seed_all(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _cooldown_epochs(acfg: dict, epochs: int) -> int:
    """Epochs at the end of the run on the cool-down pipeline: ``aug.cooldown_fraction`` of the
    run, rounded (a fraction, like OneCycle's warm-up, so a short run gets a short cool-down)."""
    v = acfg.get("cooldown_fraction") or 0
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
        raise ConfigError(f"aug.cooldown_fraction: must be a number in [0, 1) (the share of the epochs, at the end, "
                          f"trained on aug.cooldown); got {v!r}")
    return int(math.floor(v * epochs + 0.5))


def _check_data(data, spec: ModelSpec, sweep_trial: bool) -> None:
    if data.num_classes != spec.num_classes:
        raise ConfigError(f"model.num_classes: the model outputs {spec.num_classes} classes but the data has "
                          f"{data.num_classes} ({', '.join(data.classes[:5])}...)")
    if data.image_shape != spec.input_shape:
        raise ConfigError(f"model.input_size: the model expects {spec.input_shape} images but the data has "
                          f"{data.image_shape}")
    if sweep_trial and len(data.x_val) == 0:
        raise ConfigError("data.val_size: a sweep trial is judged on validation accuracy; set data.val_size > 0")


@dataclass(frozen=True)
class _Knobs:
    """The recipe's knobs, parsed: the augmentation lists as built (``aug.flip`` applied) and
    whether each phase flips alternate epochs, the cool-down epochs, EMA decay and TTA."""
    train_spec: Any
    alt_train: bool
    cool_spec: Any
    alt_cool: bool
    cool: int
    ema_decay: float | None
    tta: str


def parse_knobs(cfg) -> _Knobs:
    """The recipe's knobs (trainer, optim, aug), refused in one line before torch is imported,
    data loaded or an MLflow run started."""
    from omegaconf import OmegaConf

    from archsearch.training.augment import split_flip
    from archsearch.training.compilation import compile_setting
    from archsearch.training.evaluate import parse_tta
    from archsearch.training.optim import parse_ema, parse_norm_knobs
    from archsearch.training.recipe import check_recipe

    acfg = OmegaConf.to_container(cfg.aug, resolve=True)
    tcfg = cfg.trainer
    cool, ema_decay, tta = _cooldown_epochs(acfg, int(tcfg.epochs)), parse_ema(tcfg), parse_tta(tcfg)
    check_recipe(tcfg)
    compile_setting(tcfg.get("compile", "false"))
    parse_norm_knobs(cfg.optim)
    flip = str(acfg.get("flip") or "random")
    train_spec, alt_train = split_flip(acfg.get("train"), flip, "aug.train")
    cool_spec, alt_cool = split_flip(acfg.get("cooldown"), flip, "aug.cooldown")
    return _Knobs(train_spec, alt_train, cool_spec, alt_cool, cool, ema_decay, tta)


def _setup(cfg, spec: ModelSpec, analysis: Analysis, k: _Knobs, out_dir, data, sweep_trial: bool) -> _Setup:
    """Everything before the first epoch, in an order that keeps runs reproducible: the
    global RNGs are seeded first and only the model's initialisation draws from them."""
    import torch
    from omegaconf import OmegaConf

    from archsearch.grammar.build import build_model
    from archsearch.training.augment import build_pipeline
    from archsearch.training.compilation import choose_compile
    from archsearch.training.data import load_data
    from archsearch.training.precision import choose_precision, pick_device
    from archsearch.training.recipe import apply_recipe

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tcfg, base_dir = cfg.trainer, Path(os.environ.get("ARCHSEARCH_BASE", os.getcwd()))
    _seed_all(int(cfg.seed))
    if tcfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    device = pick_device(str(tcfg.device))
    epochs = int(tcfg.epochs)
    if device.type == "cuda" and not tcfg.deterministic:
        torch.backends.cudnn.benchmark = True
    if data is None:
        data = load_data(OmegaConf.to_container(cfg.data, resolve=True), base_dir)
    _check_data(data, spec, sweep_trial)
    mean_px = [m * 255 for m in data.mean]
    pipeline = build_pipeline(k.train_spec, mean_px)
    cool_pipeline = build_pipeline(k.cool_spec, mean_px, where="aug.cooldown") if k.cool else None
    model, sh = build_model(spec), spec_hash(spec)
    applied = apply_recipe(model, tcfg, data.x_train, mean_px, [s * 255 for s in data.std], int(cfg.seed))
    if applied:
        log.info("recipe: %s", applied)
    precision = choose_precision(tcfg, device, model, sh, int(tcfg.batch_size), spec.input_shape, spec.num_classes)
    model = model.to(device)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    compiled = choose_compile(tcfg.get("compile", "false"), model, precision, sh, int(tcfg.batch_size),
                              spec.input_shape, spec.num_classes, images=epochs * len(data.x_train))
    engine = Engine(cfg, model, data, precision, (pipeline, cool_pipeline), epochs, k.cool, k.ema_decay,
                    (k.alt_train, k.alt_cool and bool(k.cool)), compiled)
    return _Setup(spec, analysis, data, engine, epochs, k.tta, out, base_dir, pipeline, sh)


# ------------------------------------------------------------------ the run
def train(cfg, out_dir: str | Path, epoch_hook: Callable[[int, float], None] | None = None,
          parent_run_id: str | None = None, tracker=None, data=None, run_tags: dict | None = None,
          run_started: Callable[[str], None] | None = None) -> TrainResult:
    """Train ``cfg`` (a composed config); refuses over-budget specs before touching data.

    ``epoch_hook(epoch, val_acc)`` may raise :class:`~archsearch.trial.Pruned`. ``data`` may be
    pre-loaded :class:`~archsearch.data.Splits` (a sweep loads its dataset once per process).
    """
    from omegaconf import OmegaConf

    from archsearch.tracking import make_tracker, run_lifecycle

    t0 = time.time()
    spec, analysis = gate(cfg)  # may raise: nothing loaded yet
    knobs = parse_knobs(cfg)
    sys_every = _system_metrics_interval(cfg.trainer.get("system_metrics"))
    s = _setup(cfg, spec, analysis, knobs, out_dir, data, sweep_trial=epoch_hook is not None)
    tcfg = cfg.trainer
    state = checkpoint.load(str(tcfg.resume), s.engine, s.spec_hash) if tcfg.resume else TrainState()
    resolved = OmegaConf.to_container(cfg, resolve=True)
    tracker = tracker or make_tracker(resolved.get("tracking"), s.base_dir)
    tags = {"model": spec.name, "spec_hash": s.spec_hash, "git_commit": _git_sha(s.base_dir),
            "device": str(s.engine.precision.device), **s.engine.precision.tags(),
            **s.engine.compiled.tags(), "seed": int(cfg.seed),
            "data": resolved["data"].get("source"), **(run_tags or {})}
    resumed = state.run_id
    with run_lifecycle(tracker, name=cfg.get("run_name") or f"{spec.name}-{s.spec_hash[:6]}", tags=tags,
                       parent_run_id=parent_run_id, run_id=resumed) as run:
        state.run_id = run.run_id
        if run_started is not None and run.run_id:
            run_started(run.run_id)
        if not resumed:
            _log_inputs(run, cfg, resolved, s)
        _log_start(s, resumed is not None)
        with run.system_metrics(sys_every, resumed is not None) if sys_every else contextlib.nullcontext():
            for epoch in range(state.epoch, s.epochs):
                _run_epoch(s, state, run, epoch, bool(tcfg.checkpoint))
                if epoch_hook is not None:
                    epoch_hook(epoch + 1, state.history[-1]["val_acc"])  # may raise Pruned
            return _finish(s, state, run, cfg, t0)


def _system_metrics_interval(v) -> float | None:
    """``trainer.system_metrics``: false | true (every 10 s) | seconds -> the interval, or None."""
    if v is None or v is False:
        return None
    if v is True:
        v = 10.0
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
        raise ConfigError(f"trainer.system_metrics: must be false, true or a sampling interval in seconds > 0; "
                          f"got {v!r}")
    try:
        import psutil  # noqa: F401  (what MLflow samples with)
    except ImportError:
        raise ConfigError("trainer.system_metrics: needs psutil (pip install psutil)") from None
    return float(v)


def _run_epoch(s: _Setup, state: TrainState, run, epoch: int, save: bool) -> None:
    """Train, validate, step the schedule, record, log, checkpoint: one epoch."""
    eng = s.engine
    rec = eng.train_epoch(epoch)
    val = eng.validate()
    lr = eng.end_epoch(val["val_loss"])
    rec = {"epoch": rec["epoch"], "train_loss": rec["train_loss"], "train_acc": rec["train_acc"], **val, "lr": lr,
           "epoch_seconds": rec["epoch_seconds"], "images_per_s": rec["images_per_s"]}
    has_val = len(s.data.x_val) > 0
    is_best = state.record(rec, has_val)
    run.log_metrics({**{k: v for k, v in rec.items() if k != "epoch"}, "best_val_acc": state.best_val,
                     "epochs_done": epoch + 1}, step=epoch + 1)
    raw = f" (live weights {rec['val_acc_raw']:.4f})" if "val_acc_raw" in rec else ""
    log.info("epoch %d/%d  train loss %.4f acc %.4f | val loss %.4f acc %.4f%s | lr %.2e | %.0fs %.0f img/s",
             epoch + 1, s.epochs, rec["train_loss"], rec["train_acc"], rec["val_loss"], rec["val_acc"], raw, lr,
             rec["epoch_seconds"], rec["images_per_s"])
    if save:
        checkpoint.save(s.out / "last.pt", eng, state, s.spec, s.spec_hash)
        if is_best:
            checkpoint.save(s.out / "best.pt", eng, state, s.spec, s.spec_hash)


def _finish(s: _Setup, state: TrainState, run, cfg, t0: float) -> TrainResult:
    """The final test evaluation, its metrics and artifacts, and the run's one closing line."""
    from archsearch.tracking import ui_link
    from archsearch.training.plots import write_plots

    test_loss, test_acc, preds, parts = s.engine.test(s.tta)
    wall = time.time() - t0
    run.log_metrics({"test_acc": test_acc, "test_loss": test_loss, **parts, "wall_seconds": wall}, step=s.epochs)
    if run.enabled:
        for p in write_plots(s.out, state.history, s.data.classes, s.data.y_test, preds, s.data.x_test):
            run.log_artifact(p)
        if cfg.trainer.checkpoint and (s.out / "best.pt").exists() and cfg.tracking.get("log_checkpoint", True):
            run.log_artifact(s.out / "best.pt", "checkpoints")
        if cfg.tracking.get("log_model", True):
            _log_model(s, state, run)
    how = []
    if s.tta != "none":
        how.append(f"{s.tta} TTA, single view {parts['test_acc_no_tta']:.4f}")
    if s.engine.ema is not None:
        how.append(f"EMA weights, live weights {parts['test_acc_raw']:.4f}")
    has_val = len(s.data.x_val) > 0
    r = s.analysis
    log.info("done %s: test acc %.4f%s (loss %.4f), %s, %s params, RF %d, %d epochs, %.0fs wall",
             s.spec.name, test_acc, f" ({'; '.join(how)})" if how else "", test_loss,
             f"best val acc {state.best_val:.4f}" if has_val else "no validation split (data.val_size=0)",
             f"{r.params:,}", r.rf, len(state.history), wall)
    link = ui_link(run, run.run_id)
    if link:
        log.info("MLflow: %s", link)
    return TrainResult(state.best_val, test_acc, test_loss, len(state.history), r.params, r.rf, r.macs, wall,
                       run.run_id, state.history, s.engine.precision.describe())


# ------------------------------------------------------------------ what the run records
def _git_sha(cwd: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        sha = out.stdout.strip()
        if sha:
            dirty = subprocess.run(["git", "status", "--porcelain", "-uno"], cwd=cwd, capture_output=True,
                                   text=True, timeout=5).stdout.strip()
            return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def _log_inputs(run, cfg, resolved: dict, s: _Setup) -> None:
    """Parameters, the resolved config, the analysis table and a grid of augmented samples."""
    import numpy as np
    from omegaconf import OmegaConf

    from archsearch.grammar.budget import parse_budget
    from archsearch.grammar.table import format_table
    from archsearch.tracking import flatten
    from archsearch.training.augment import save_grid

    r, d = s.analysis, s.data
    params = flatten({k: v for k, v in resolved.items() if k not in ("tracking", "trial", "hydra")})
    params.update({"model.params": r.params, "model.rf": r.rf, "model.macs": r.macs,
                   "model.spec_hash": s.spec_hash, "data.n_train": len(d.x_train),
                   "data.n_val": len(d.x_val), "data.n_test": len(d.x_test)})
    run.log_params(params)
    if run.enabled:
        run.log_dataset(**_dataset_input(resolved["data"], d, s.base_dir))
    (s.out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (s.out / "analysis.txt").write_text(format_table(r, parse_budget(resolved["budget"]), []) + "\n")
    run.log_artifact(s.out / "config.yaml")
    run.log_artifact(s.out / "analysis.txt")
    if s.pipeline is not None and run.enabled:
        seed = int(cfg.seed)
        idx = np.random.default_rng(seed).choice(len(d.x_train), size=min(32, len(d.x_train)), replace=False)
        s.pipeline.set_random_seed(seed)
        aug = np.stack([s.pipeline(image=im)["image"] for im in d.x_train[idx]])
        run.log_artifact(save_grid(aug, str(s.out / "augmented_samples.png"), [d.classes[i] for i in d.y_train[idx]]))


def _dataset_input(cfg_data: dict, d, base_dir: Path) -> dict:
    """The data as MLflow sees it: name, source, a digest of the exact splits, their sizes."""
    src = str(cfg_data.get("source"))
    h = hashlib.sha256()
    for a in (d.x_train, d.y_train, d.x_val, d.y_val, d.x_test, d.y_test):
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    if src == "synthetic":
        name, source_type, source = "synthetic", "synthetic", {"uri": "synthetic", "seed": cfg_data.get("seed")}
    else:
        root = Path(str(cfg_data.get("root"))).expanduser()
        root = root if root.is_absolute() else base_dir / root
        name, source_type, source = (src if src == "cifar10" else root.name), "local", {"uri": str(root.resolve())}
    c, hh, w = d.image_shape
    profile = {"num_rows": len(d.x_train), "train": len(d.x_train), "val": len(d.x_val), "test": len(d.x_test),
               "classes": d.num_classes, "image": f"{c}x{hh}x{w} uint8"}
    schema = {"mlflow_tensorspec": {
        "features": json.dumps([{"type": "tensor", "tensor-spec": {"dtype": "uint8", "shape": [-1, hh, w, c]}}]),
        "targets": json.dumps([{"type": "tensor", "tensor-spec": {"dtype": str(d.y_train.dtype), "shape": [-1]}}])}}
    return {"name": name, "digest": h.hexdigest()[:10], "source_type": source_type, "source": source,
            "profile": profile, "schema": schema}


def _log_model(s: _Setup, state: TrainState, run) -> None:
    """The best weights (``best.pt``; the final ones without checkpoints) as an MLflow PyTorch
    model taking float32 RGB in [0, 1], N x 3 x H x W (the normalisation is its first layer)."""
    import numpy as np
    import torch

    from archsearch.grammar.build import build_model

    t0, net, step = time.time(), build_model(s.spec), len(state.history)
    best = s.out / "best.pt"
    if best.exists():
        ck = torch.load(best, map_location="cpu", weights_only=False)
        net.load_state_dict(ck["ema"]["model"] if ck.get("ema") else ck["model"])
        step = int(ck["epoch"]) + 1
    else:
        net.load_state_dict({k: v.cpu() for k, v in s.engine.eval_model.state_dict().items()})
    mean, std = torch.tensor(s.data.mean), torch.tensor(s.data.std)
    norm = torch.nn.Conv2d(3, 3, 1).requires_grad_(False)  # (x - mean) / std as a 1x1 conv
    norm.weight.copy_(torch.diag(1 / std).view(3, 3, 1, 1))
    norm.bias.copy_(-mean / std)
    c, h, w = s.data.image_shape
    example = (s.data.x_test[:1].transpose(0, 3, 1, 2) / 255.0).astype(np.float32).reshape(1, c, h, w)
    model_id = run.log_model(torch.nn.Sequential(norm, net.float()), example, step, name=s.spec.name,
                             params={"spec_hash": s.spec_hash, "epoch": step},
                             metadata={"input": f"float32 N x {c} x {h} x {w}, RGB in [0, 1]",
                                       "output": "logits", "classes": list(s.data.classes)})
    log.info("logged model %s (epoch %d weights) in %.1fs", model_id, step, time.time() - t0)


def _log_start(s: _Setup, resumed: bool) -> None:
    r, eng = s.analysis, s.engine
    log.info("%s:%s params %s, RF %d, %s MACs | %s | device %s, %s, %s, %d workers, batch %d",
             s.spec.name, " (resumed)" if resumed else "", f"{r.params:,}", r.rf, f"{r.macs:,}", s.data.summary(),
             eng.precision.device, eng.precision.describe(), eng.compiled.describe(), eng.workers, eng.batch_size)
