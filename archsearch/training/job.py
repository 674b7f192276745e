"""One training run, from a composed config to a :class:`TrainResult`.

    gate (spec, analysis, budget: refuse here, nothing loaded)
      -> setup (seed, device, data, augmentation, model, precision) -> engine     (run_setup)
      -> MLflow run: epochs (train, validate, checkpoint, pruning hook) -> test -> artifacts
                                                                   (what it records: run_log)

``train(cfg, out_dir)`` is what the CLI, the sweeper's jobs and the benchmark run;
``fit(overrides=[...])`` is the same from a notebook.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from archsearch.config.compose import compose
from archsearch.config.gate import gate
from archsearch.errors import ConfigError
from archsearch.grammar.spec import spec_hash
from archsearch.tracking import make_tracker, run_lifecycle, trial_run_name
from archsearch.training import checkpoint, run_log
from archsearch.training.engine import TrainState
from archsearch.training.resume_check import check_settings, run_settings
from archsearch.training.run_setup import RunSetup, parse_knobs, setup_run

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


def train(cfg, out_dir: str | Path, epoch_hook: Callable[[int, float], None] | None = None,
          parent_run_id: str | None = None, tracker=None, data=None, run_tags: dict | None = None,
          run_started: Callable[[str], None] | None = None) -> TrainResult:
    """Train ``cfg`` (a composed config); refuses over-budget specs before touching data.

    ``epoch_hook(epoch, val_acc)`` may raise :class:`~archsearch.errors.Pruned`. ``data`` may be
    pre-loaded :class:`~archsearch.training.data.Splits` (a sweep loads its dataset once per process).
    """
    t0 = time.time()
    spec, analysis = gate(cfg)  # may raise: nothing loaded yet
    knobs = parse_knobs(cfg)
    sys_every = run_log.system_metrics_interval(cfg.trainer.get("system_metrics"))
    tcfg = cfg.trainer
    resolved = OmegaConf.to_container(cfg, resolve=True)
    settings, branch = run_settings(resolved), _branch(tcfg)
    ck = checkpoint.read(str(tcfg.resume), spec_hash(spec)) if tcfg.resume else None
    changed = check_settings(ck, settings, branch) if ck else []  # refused here: nothing loaded yet
    s = setup_run(cfg, spec, analysis, knobs, out_dir, data, sweep_trial=epoch_hook is not None)
    state = checkpoint.restore(ck, s.engine) if ck else TrainState()
    tracker = tracker or make_tracker(resolved.get("tracking"), s.base_dir)
    tags = run_log.run_tags(s, cfg, resolved, run_tags)
    if branch:
        tags.update({"archsearch.branched_from": f"run {state.run_id}, epoch {state.epoch}, {ck['path']}",
                     "archsearch.branch_changes": " ".join(changed) or "(none)"})
    resumed, origin = (None, state.run_id) if branch else (state.run_id, None)
    trial = (run_tags or {}).get("trial_number")  # a sweep trial: named by its number and, at its end, result
    name = cfg.get("run_name") or (trial_run_name(trial, "RUNNING") if trial is not None
                                   else f"{spec.name}-{s.spec_hash[:6]}")
    with run_lifecycle(tracker, name=name, tags=tags, parent_run_id=parent_run_id, run_id=resumed,
                       trial=None if cfg.get("run_name") else trial) as run:
        state.run_id = run.run_id
        if run_started is not None and run.run_id:
            run_started(run.run_id)
        if not resumed:
            run_log.log_inputs(run, cfg, resolved, s)
        if branch:
            _log_branch(run, s, state, origin, changed)
        run_log.log_start(s, resumed is not None)
        with run.system_metrics(sys_every, resumed is not None, run_log.gpu_uuids(s.engine.precision.device)) \
                if sys_every else contextlib.nullcontext():
            for epoch in range(state.epoch, s.epochs):
                _run_epoch(s, state, run, epoch, settings if tcfg.checkpoint else None)
                if epoch_hook is not None:
                    epoch_hook(epoch + 1, state.history[-1]["val_acc"])  # may raise Pruned
            result = _finish(s, state, run, cfg, t0)
        if trial is not None and not cfg.get("run_name"):
            run.rename(trial_run_name(trial, "COMPLETE", val=state.best_val, params=analysis.params))
        return result


THRESHOLDS = (0.80, 0.85, 0.90)  # validation accuracies whose first crossing a run records (time to accuracy)


def first_crossings(history: list[dict]) -> dict[str, float]:
    """The thresholds the last epoch of ``history`` crossed first -> {``epoch_to_val85``: its epoch,
    ``seconds_to_val85``: the wall seconds of every epoch so far, training and validation}."""
    last, earlier = history[-1], history[:-1]
    wall = sum(h.get("epoch_wall_seconds", h["epoch_seconds"]) for h in history)  # (older checkpoints lack it)
    out: dict[str, float] = {}
    for t in THRESHOLDS:
        if last["val_acc"] >= t and all(h["val_acc"] < t for h in earlier):
            out[f"epoch_to_val{round(t * 100)}"] = last["epoch"]
            out[f"seconds_to_val{round(t * 100)}"] = round(wall, 1)
    return out


def _branch(tcfg) -> bool:
    branch = tcfg.get("branch", False)
    if not isinstance(branch, bool):
        raise ConfigError(f"trainer.branch: must be true or false; got {branch!r}")
    if branch and not tcfg.resume:
        raise ConfigError("trainer.branch: true starts a new run from a checkpoint; name it with trainer.resume=PATH/last.pt")
    return branch


def _epoch_metrics(history: list[dict], best_val: float, has_val: bool) -> tuple[dict, dict]:
    """What an epoch logs (its record, the best validation so far, the thresholds it crossed first)."""
    rec = history[-1]
    reached = first_crossings(history) if has_val else {}
    return {**{k: v for k, v in rec.items() if k != "epoch"}, "best_val_acc": best_val,
            "epochs_done": rec["epoch"], "epochs": rec["epoch"], **reached}, reached


def _log_branch(run, s: RunSetup, state: TrainState, origin: str | None, changed: list[str]) -> None:
    """A branch's new run gets the epochs it continues, as they were logged, so its curves are whole."""
    has_val, best = len(s.data.x_val) > 0, -1.0
    for i, rec in enumerate(state.history):
        best = max(best, rec["val_acc"]) if has_val else float("nan")
        run.log_metrics(_epoch_metrics(state.history[: i + 1], best, has_val)[0], step=i + 1)
    log.info("branched from run %s at epoch %d: a new run (%s), its first %d epochs copied; changed: %s", origin,
             state.epoch, run.run_id, state.epoch, " ".join(changed) or "nothing")


def _run_epoch(s: RunSetup, state: TrainState, run, epoch: int, settings: dict | None) -> None:
    """Train, validate, step the schedule, record, log, checkpoint (``settings``: the run's, stored
    with it; None: no checkpoint): one epoch."""
    eng = s.engine
    t0 = time.time()
    rec = eng.train_epoch(epoch)
    val = eng.validate()
    lr = eng.end_epoch(val["val_loss"])
    rec = {"epoch": rec["epoch"], "train_loss": rec["train_loss"], "train_acc": rec["train_acc"], **val, "lr": lr,
           "epoch_seconds": rec["epoch_seconds"], "images_per_s": rec["images_per_s"],
           "epoch_wall_seconds": time.time() - t0}
    has_val = len(s.data.x_val) > 0
    is_best = state.record(rec, has_val)
    metrics, reached = _epoch_metrics(state.history, state.best_val, has_val)
    run.log_metrics(metrics, step=epoch + 1)
    for key in (k for k in reached if k.startswith("epoch_to_")):
        log.info("val acc reached %s%% at epoch %d, %.0fs of training and validation", key[-2:], epoch + 1,
                 reached[key.replace("epoch_to_", "seconds_to_")])
    raw = f" (live weights {rec['val_acc_raw']:.4f})" if "val_acc_raw" in rec else ""
    log.info("epoch %d/%d  train loss %.4f acc %.4f | val loss %.4f acc %.4f%s | lr %.2e | %.0fs %.0f img/s",
             epoch + 1, s.epochs, rec["train_loss"], rec["train_acc"], rec["val_loss"], rec["val_acc"], raw, lr,
             rec["epoch_seconds"], rec["images_per_s"])
    if settings is not None:
        checkpoint.save(s.out / "last.pt", eng, state, s.spec, s.spec_hash, settings)
        if is_best:
            checkpoint.save(s.out / "best.pt", eng, state, s.spec, s.spec_hash, settings)


def _finish(s: RunSetup, state: TrainState, run, cfg, t0: float) -> TrainResult:
    """The final test evaluation, its metrics and artifacts, and the run's one closing line."""
    test_loss, test_acc, preds, parts = s.engine.test(s.tta)
    wall = time.time() - t0
    run.log_metrics({"test_acc": test_acc, "test_loss": test_loss, **parts, "wall_seconds": wall}, step=s.epochs)
    run_log.log_outputs(run, s, state, cfg, preds)
    run_log.log_done(s, state, run, test_acc, test_loss, parts, wall)
    r = s.analysis
    return TrainResult(state.best_val, test_acc, test_loss, len(state.history), r.params, r.rf, r.macs, wall,
                       run.run_id, state.history, s.engine.precision.describe())
