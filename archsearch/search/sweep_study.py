"""The sweeper's study, opened and checked: :func:`open_sweep_study` creates or resumes the Optuna
study a sweep's settings name, checks them against what the study already holds (directions,
search space, objectives), labels it for the report, retrain and export, recovers the trials
dead workers left RUNNING, and finds (or starts) the study's MLflow parent run. Everything the
sweeper's loop needs of it is one :class:`SweepStudy`.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf

from archsearch.config.paths import base_dir
from archsearch.errors import SweepConfigError
from archsearch.search.recovery import Recovery
from archsearch.search.results import scored_by
from archsearch.search.samplers import make_sampler
from archsearch.search.space import DIRECTIONS, MEASURED, TIMED, Dimension, check_keys, merge_space
from archsearch.search.study import (
    count_states,
    forget_storage,
    make_pruner,
    open_storage,
    storage_url,
)
from archsearch.tracking import NullTracker, Tracker, make_tracker

__all__ = ["SweepStudy", "open_sweep_study"]

log = logging.getLogger("archsearch.sweep")


@dataclass
class SweepStudy:
    """One sweeper's study and what goes with it."""

    name: str
    url: str  # the storage's URL (journal:PATH, postgresql://...)
    storage: Any  # the storage object :func:`~archsearch.search.study.open_storage` gave (heartbeats included)
    study: optuna.Study
    objectives: list[str]  # what each trial's values are: val_acc, params, macs, rf
    scored: str  # "" when the trials train; else the objectives that score them without training ("macs")
    space: dict[str, Dimension]  # the search space: config key -> its dimension
    base: list[str]  # the overrides every trial gets (the sweep file's fixed params, then the command line's)
    pinned: list[str]  # searched keys the command line fixed (they left the space): their overrides
    sampler: dict[str, Any]  # hydra.sweeper.sampler, re-seeded for each trial
    tracker: Tracker | NullTracker
    parent: str | None  # the study's MLflow parent run
    sweep_dir: Path
    recovery: Recovery


def open_sweep_study(conf: DictConfig, config: DictConfig, arguments: list[str]) -> SweepStudy:
    """The sweep's study (created or resumed) with its search space, MLflow parent run and sweep folder.
    ``conf`` is hydra.sweeper's config, ``config`` the app's (with its hydra node), ``arguments`` the
    command line's overrides. A setting the study cannot honour raises :class:`SweepConfigError`."""
    _check_app(config)
    root = base_dir()
    name = str(conf.study_name or config.hydra.runtime.choices.get("sweep") or "archsearch")
    directions, objectives = read_objectives(conf)
    # nothing to train for: each accepted candidate is scored by the analysis alone (a proxy that
    # costs no training, e.g. the MACs, whose ranking `report proxies=` measures)
    scored = "" if "val_acc" in objectives else ",".join(objectives)
    space, base, pinned = _space(conf, arguments, scored)
    check_keys(space, config)
    url = storage_url(conf.storage, name, root)
    max_epochs = int(config.trainer.epochs)
    pconf = OmegaConf.to_container(conf.pruner, resolve=True)
    if len(directions) > 1 and pconf.get("name") != "none":
        log.warning("multi-objective study: Optuna cannot prune it, so pruning is off")
        pconf = {"name": "none"}
    make_pruner(pconf, max_epochs)  # validate the pruner config now
    sampler = OmegaConf.to_container(conf.sampler, resolve=True)
    storage, study = _create(conf, name, url, directions, make_sampler(sampler, space))
    _check(study, name, url, directions, scored)
    _enqueue(study, conf, space)
    _label(study, objectives, scored, pconf, max_epochs, base)
    tracker = make_tracker(OmegaConf.to_container(config.tracking, resolve=True), root)
    recovery = Recovery(study=study, storage=storage, tracker=tracker)
    recovery.recover()
    parent = parent_run(tracker, study)
    sweep_dir = Path(config.hydra.sweep.dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, sweep_dir / "multirun.yaml")
    return SweepStudy(name=name, url=url, storage=storage, study=study, objectives=objectives, scored=scored,
                      space=space, base=base, pinned=pinned, sampler=sampler, tracker=tracker, parent=parent,
                      sweep_dir=sweep_dir, recovery=recovery)


def _check_app(config: DictConfig) -> None:
    """The sweeper trains archsearch's config: an app without it gets one line, not a traceback."""
    missing = [k for k in ("model", "budget", "data", "trainer", "tracking") if k not in config]
    if missing:
        raise SweepConfigError(f"hydra/sweeper=archsearch: this app's config has no {', '.join(missing)}: the "
                               "archsearch sweeper searches archsearch's training config (python -m "
                               "archsearch.train -m sweep=NAME); use Hydra's own sweepers for other apps")


def read_objectives(conf: DictConfig) -> tuple[list[str], list[str]]:
    """hydra.sweeper.direction and objectives -> (directions, objectives), checked: one objective per
    direction; minimising the validation accuracy is allowed, with a warning."""
    d = conf.direction
    dirs = [str(x) for x in d] if isinstance(d, (list, tuple)) or OmegaConf.is_list(d) else [str(d)]
    objs = [str(o) for o in conf.objectives]
    for x in dirs:
        if x not in DIRECTIONS:
            raise SweepConfigError(f"hydra.sweeper.direction: unknown direction {x!r}; choose one of maximize, minimize")
    for o in objs:
        if o not in ("val_acc", *MEASURED, *TIMED):
            raise SweepConfigError(f"hydra.sweeper.objectives: unknown objective {o!r}; choose from val_acc, params, "
                                   "macs, rf, ms_per_image")
    if "val_acc" in objs and set(objs) & set(TIMED):
        raise SweepConfigError(f"hydra.sweeper.objectives: {objs}: ms_per_image scores candidates without training; "
                               "combine it with params, macs or rf (a trained run logs its own speed)")
    if len(objs) != len(dirs):
        raise SweepConfigError(f"hydra.sweeper.objectives: {len(objs)} objective(s) {objs} for {len(dirs)} "
                               f"direction(s) {dirs}; name one objective per direction, e.g. "
                               "hydra.sweeper.objectives=[val_acc,params] hydra.sweeper.direction=[maximize,minimize]")
    for o, x in zip(objs, dirs):
        if o == "val_acc" and x == "minimize":
            log.warning("warning: hydra.sweeper.direction minimizes val_acc: this sweep looks for the lowest "
                        "validation accuracy (maximize looks for the highest)")
    return dirs, objs


def _space(conf: DictConfig, arguments: list[str],
           scored: str) -> tuple[dict[str, Dimension], list[str], list[str]]:
    """hydra.sweeper.params and the command line -> :func:`~archsearch.search.space.merge_space`."""
    space, base, pinned = merge_space({str(k): str(v) for k, v in (conf.params or {}).items()}, arguments)
    for name in space:
        if scored and not name.startswith("model."):
            log.warning("hydra.sweeper.params.%s: does not change %s, which scores the trials without training: "
                        "its sampled values are noise to the sampler (fix it, e.g. %s=VALUE)", name, scored, name)
    return space, base, pinned


def _create(conf: DictConfig, name: str, url: str, directions: list[str], sampler: optuna.samplers.BaseSampler):
    """-> (storage, study), the study created or loaded; workers starting together race to create the
    storage's tables, so a failed attempt is retried on a fresh storage."""
    for attempt in range(5):
        try:
            storage = open_storage(url, heartbeat=(conf.get("heartbeat_interval", 30), conf.get("grace_period", 120)))
            study = optuna.create_study(study_name=name, storage=storage, directions=directions,
                                        sampler=sampler, load_if_exists=True)
            return storage, study
        except Exception:
            forget_storage(url)
            if attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))


def _enqueue(study: optuna.Study, conf: DictConfig, space: dict[str, Dimension]) -> None:
    """``hydra.sweeper.enqueue``: trials to run first (a baseline such as the shipped recipe), each a
    mapping of searched keys to values (keys left out are sampled). Queued once, into a new study:
    a resumed study has them already."""
    items = OmegaConf.to_container(conf.enqueue, resolve=True) if conf.get("enqueue") else []
    if not items or study.get_trials(deepcopy=False):
        return
    queued = []
    for i, item in enumerate(items):
        where = f"hydra.sweeper.enqueue[{i}]"
        if not isinstance(item, dict) or not item:
            raise SweepConfigError(f"{where}: must be a mapping of searched keys to values, e.g. {{optim.lr: 0.1}}; "
                                   f"got {item!r}")
        queued.append({key: _enqueued_value(f"{where}.{key}", space.get(key), value, space)
                       for key, value in item.items()})
    for params in queued:
        study.enqueue_trial(params, skip_if_exists=True)


def _enqueued_value(where: str, dim: Dimension | None, value: Any, space: dict[str, Dimension]) -> Any:
    """One enqueued value as Optuna stores the dimension's values, checked against it."""
    if dim is None:
        raise SweepConfigError(f"{where}: not a searched key; choose from {', '.join(space)}")
    labels = dim.labels()
    if labels is not None:
        values = dim.values()
        match = [i for i, v in enumerate(values) if v == value and isinstance(v, bool) == isinstance(value, bool)]
        if not match:
            raise SweepConfigError(f"{where}: {value!r} is not one of the choices {values}")
        return labels[match[0]]
    values = dim.values()
    if values:  # a range: one of its points
        if value not in values:
            raise SweepConfigError(f"{where}: {value!r} is not a point of the range {values}")
        return value
    lo, hi = float(dim.sweep.start), float(dim.sweep.end)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise SweepConfigError(f"{where}: {value!r} is outside the interval [{lo:g}, {hi:g}]")
    return value


def _check(study: optuna.Study, name: str, url: str, directions: list[str], scored: str) -> None:
    """A resumed study keeps its directions, and its values stay one kind of figure (trained or scored)."""
    if list(d.name.lower() for d in study.directions) != directions:
        raise SweepConfigError(f"hydra.sweeper.direction: study {name!r} in {url} already has "
                               f"directions {[d.name.lower() for d in study.directions]}")
    was = scored_by(study)
    if was != scored and count_states(study)["COMPLETE"]:  # a study's values are one kind of figure
        def what(s: str) -> str:
            return f"scored by {s} without training" if s else "trained (val_acc)"
        raise SweepConfigError(f"hydra.sweeper.objectives: study {name!r} in {url} holds trials "
                               f"{what(was)}, these objectives are {what(scored)}; keep its objectives "
                               "or start a new study with hydra.sweeper.study_name=NEW")


def _label(study: optuna.Study, objectives: list[str], scored: str, pconf: dict, max_epochs: int,
           base: list[str]) -> None:
    with warnings.catch_warnings():  # dashboards show "val_acc", not "Objective 0" (experimental API)
        warnings.simplefilter("ignore")
        study.set_metric_names(list(objectives))
    if scored:  # report, retrain and export: the trials' values are not accuracies
        study.set_user_attr("archsearch.scored", scored)
    study.set_user_attr("archsearch.pruner", pconf)
    study.set_user_attr("archsearch.max_epochs", max_epochs)
    study.set_user_attr("archsearch.base_overrides", base)  # retrain/export rebuild a trial's architecture


def parent_run(tracker: Tracker | NullTracker, study: optuna.Study) -> str | None:
    """The study's MLflow parent run: the one the study names (reopened if a stopped or finished sweep
    is resumed), else a new one; of workers starting together, the first to name its run in the study
    wins and the others delete theirs. None with tracking off."""
    if not tracker.enabled:
        return None
    rid = study.user_attrs.get("mlflow_parent_run_id")
    if rid and tracker.reopen(rid):
        return rid
    tracker.start(name=f"study {study.study_name}",
                  tags={"archsearch.study": study.study_name, "archsearch.role": "parent"})
    mine = tracker.run_id
    study.set_user_attr("mlflow_parent_run_id", mine)
    winner = study.user_attrs.get("mlflow_parent_run_id", mine)  # another worker may have won
    if winner != mine:
        tracker.delete_run(mine)
    return winner
