"""``python -m archsearch.retrain sweep=NAME [top=3] [seeds=1] [trials=4,7] [distinct=false] [force=true] [overrides ...]``

Retrains a sweep's best trials with the full recipe, to see whether the sweep's cheaper
proxy training (``conf/proxy/``) ranked them right and what they are really worth.

It opens the sweep's study (as the sweeper and ``python -m archsearch.report`` find it:
``hydra.sweeper.study_name=`` and ``hydra.sweeper.storage=`` work the same way), takes the
``top`` COMPLETE trials by objective value, the best of each architecture (its ``model.*``
values; ``distinct=false`` also takes trials that differ only in other values such as the lr;
in a study scored without training, the first trial of each score: candidates with the same
MACs are one as far as the score can tell), or the trial numbers of ``trials=``, and trains
each one once per seed (``seeds=N``: seeds 0 .. N-1) on the ``config`` composed with, in
order (the last wins): ``sweep=NAME``; the architecture overrides the sweep command was
given (``model*``, ``budget*``, ``hydra.searchpath``, recorded by the sweeper; the command's
other overrides are listed but not reapplied); the trial's sampled values; ``proxy=none``
(all training images, ``trainer.epochs``); your overrides (``data=folder data.root=PATH
trainer.epochs=20 ...``); ``seed=S``. The sweep file's own settings other than its proxy
still apply (e.g. ``trainer.epochs`` of a sweep file that sets it, ``sweep=smoke``'s
synthetic data): override them like any field.

Each retrain is an MLflow run named ``<study>-t<trial>-full-s<seed>`` (tags
``archsearch.study``, ``archsearch.trial``, ``archsearch.kind=retrain``), a child of the
study's parent run, with its files in ``outputs/retrain/<study>/t<trial>-s<seed>/``. Its
result is recorded in the study as the attribute ``retrain.t<trial>.s<seed>`` (val_acc,
test_acc, test_acc_single_view, epochs, run_id, params, rf, overrides), which
``python -m archsearch.report`` (proxy vs full, rank correlation) and
``python -m archsearch.export`` (trial=best) read. A trial and seed already recorded is
skipped with a message, so an interrupted batch continues where it stopped; ``force=true``
retrains it and overwrites the record.

Exit codes: 0 done; 1 a configuration the budget rejects (nothing trained); 2 a user mistake,
one line on stderr (unknown sweep, no such study, no COMPLETE trial, a bad top / seeds /
trials / force, a trial that is not COMPLETE); 3 a run whose loss became non-finite (the
other runs still train).
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from archsearch import cli
from archsearch.config.compose import compose
from archsearch.config.gate import BudgetRejected, gate
from archsearch.config.paths import base_dir
from archsearch.errors import ConfigError, NonFiniteLoss
from archsearch.search.leaderboard import print_table
from archsearch.search.proxy_rank import proxy_vs_full
from archsearch.search.results import open_study
from archsearch.search.selection import (
    DEFAULT_TOP,
    pick_trials,
    run_overrides,
    shape_note,
    sweep_overrides,
)
from archsearch.search.study import override_key
from archsearch.tracking import make_tracker
from archsearch.training.data import load_data_once
from archsearch.training.job import train

__all__ = ["main"]

log = logging.getLogger("archsearch")

OWN = ("top", "seeds", "trials", "force", "distinct")


@dataclass
class Args:
    top: int = DEFAULT_TOP
    seeds: int = 1
    trials: list[int] | None = None
    force: bool = False
    distinct: bool = True
    overrides: list[str] = field(default_factory=list)


def parse_args(argv: Sequence[str]) -> Args:
    mine, rest = cli.split_args(argv, OWN)
    args = Args(overrides=rest)
    if "trials" in mine and "top" in mine:
        raise ConfigError("top: give either top=N (the best N trials) or trials=4,7 (those trials), not both")
    if "top" in mine:
        args.top = cli.positive_int("top", mine["top"])
    if "seeds" in mine:
        args.seeds = cli.positive_int("seeds", mine["seeds"])
    if "force" in mine:
        args.force = cli.boolean("force", mine["force"])
    if "distinct" in mine:
        args.distinct = cli.boolean("distinct", mine["distinct"])
    if "trials" in mine:
        items = [x.strip() for x in mine["trials"].strip("[]").split(",")]
        if not all(x.isdigit() for x in items):
            raise ConfigError(f"trials: expected trial numbers like trials=4,7; got {mine['trials']!r}")
        args.trials = list(dict.fromkeys(int(x) for x in items))
    return args


# ------------------------------------------------------------------ training
@dataclass
class _Plan:
    trial: Any
    seed: int
    overrides: list[str]
    cfg: Any

    @property
    def key(self) -> str:
        return f"retrain.t{self.trial.number}.s{self.seed}"


class _Capture:
    """A tracker that also keeps what the run logs as metrics (the single-view test accuracy,
    ``test_acc_no_tta``, is logged but not returned), with MLflow on or off."""

    def __init__(self, inner):
        self._inner, self.metrics = inner, {}

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    def start(self, *a, **k):
        self._inner.start(*a, **k)
        return self

    def log_metrics(self, metrics, step=None) -> None:
        self.metrics.update(metrics)
        self._inner.log_metrics(metrics, step)


def _plan_runs(study, trials: list, args: Args) -> tuple[list[_Plan], list[str]]:
    """Compose and budget-check every run before any trains; (runs to train, lines to print first)."""
    plans, skipped = [], []
    for t in trials:
        for seed in range(args.seeds):
            old = study.user_attrs.get(f"retrain.t{t.number}.s{seed}")
            if old and not args.force:
                skipped.append(f"t{t.number} s{seed}: already retrained ({_describe(old)}); force=true retrains it")
                continue
            ovs = run_overrides(study, t, args.overrides, seed)
            cfg = compose("config", ovs)
            if not any(p.trial is t for p in plans):
                _, analysis = gate(cfg)  # BudgetRejected / SpecError before anything trains (the seed changes no shape)
                skipped += shape_note(t, analysis.params)
            plans.append(_Plan(t, seed, ovs, cfg))
    return plans, skipped


def _describe(rec: dict) -> str:
    def f(v):
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"

    return (f"val_acc {f(rec.get('val_acc'))}, test_acc {f(rec.get('test_acc'))} "
            f"(single view {f(rec.get('test_acc_single_view'))}), {rec.get('epochs')} epochs, run {rec.get('run_id')}")


def _parent_run(tracker, study) -> str | None:
    rid = study.user_attrs.get("mlflow_parent_run_id")
    if not (tracker.enabled and rid):
        return None
    if tracker.has_run(rid):
        return rid
    log.warning("the study's MLflow parent run %s is not in %s: retrain runs are top-level", rid, tracker.uri)
    return None


def _data(cfg, base: Path):
    """Load a dataset once for all the runs that use it (the split depends on data.seed only)."""
    return load_data_once(OmegaConf.to_container(cfg.data, resolve=True), base)


def retrain_one(study, plan: _Plan, tracker, parent: str | None, base: Path) -> dict:
    """Train one planned run and record it in the study as ``retrain.t<trial>.s<seed>``."""
    cap = _Capture(tracker.for_run() if tracker.enabled else tracker)
    tags = {"archsearch.study": study.study_name, "archsearch.trial": plan.trial.number,
            "archsearch.kind": "retrain"}
    out = base / "outputs" / "retrain" / study.study_name / f"t{plan.trial.number}-s{plan.seed}"
    res = train(plan.cfg, out, parent_run_id=parent, tracker=cap, run_tags=tags, data=_data(plan.cfg, base))
    rec = {"val_acc": res.val_acc, "test_acc": res.test_acc,
           "test_acc_single_view": cap.metrics.get("test_acc_no_tta", res.test_acc), "epochs": res.epochs,
           "run_id": res.run_id, "params": res.params, "rf": res.rf, "overrides": plan.overrides,
           "seconds": round(res.seconds, 1), "precision": res.precision}  # what a full retrain cost, in what
    study.set_user_attr(plan.key, rec)
    return rec


# ------------------------------------------------------------------ the command
def _prepare(argv: Sequence[str]):
    args = parse_args(argv)
    cfg, study, url = open_study(args.overrides)
    trials = pick_trials(study, args.top, args.trials, distinct=args.distinct)
    plans, skipped = _plan_runs(study, trials, args)
    return args, cfg, study, trials, plans, skipped


def _train_all(study, plans: list[_Plan], cfg) -> int:
    """Train the planned runs in order; -> how many failed (a non-finite loss; the others go on)."""
    base = base_dir()
    tracker = make_tracker(OmegaConf.to_container(cfg.tracking, resolve=True), base)
    parent = _parent_run(tracker, study)
    failed = 0
    for i, p in enumerate(plans, 1):
        print(f"[{i}/{len(plans)}] t{p.trial.number} s{p.seed}: training {' '.join(p.overrides)}", flush=True)
        try:
            rec = retrain_one(study, p, tracker, parent, base)
        except NonFiniteLoss as e:
            print(f"t{p.trial.number} s{p.seed}: FAILED: {e}", flush=True)
            failed += 1
            continue
        print(f"t{p.trial.number} s{p.seed}: {_describe(rec)}, {rec['params']:,} params, RF {rec['rf']}", flush=True)
    return failed


def _retrain(argv: list[str]) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        args, cfg, study, trials, plans, skipped = _prepare(argv)
        _, other = sweep_overrides(study)
        if other:
            print(f"note: the sweep command also had {' '.join(other)}; not reapplied (training settings: "
                  "pass them again if the full recipe needs them)")
        for line in skipped:
            print(line)
        failed = _train_all(study, plans, cfg)
    except BudgetRejected as e:  # nothing trained: status 1, as for train (a user mistake is cli.start's 2)
        print(f"error: {e}", file=sys.stderr)
        return 1
    table = proxy_vs_full(study, trials=[t.number for t in trials])
    if len(table):
        print(f"\nstudy {study.study_name}: proxy vs full recipe (test accuracy single view)")
        print_table(table)
    print(f"study {study.study_name}: {len(plans) - failed} runs retrained, {failed} failed, {len(skipped)} already "
          f"recorded; compare proxy and full: python -m archsearch.report {' '.join(_study_args(args.overrides))}")
    return 3 if failed else 0


def _study_args(overrides: Sequence[str]) -> list[str]:
    """The arguments that name the study (for the closing hint)."""
    keys = ("sweep", "hydra.sweeper.study_name", "hydra.sweeper.storage", "hydra.searchpath")
    return [o for o in overrides if override_key(o) in keys]


def main(argv: Sequence[str] | None = None) -> int:
    return cli.start(__doc__, _retrain, argv)


if __name__ == "__main__":
    cli.run(main)
