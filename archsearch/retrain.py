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

from archsearch.errors import ConfigError
from archsearch.study import override_value

__all__ = ["complete_trials", "main", "override_key", "pick_trials", "run_overrides", "shape_note", "split_args",
           "sweep_overrides", "trial_overrides"]

log = logging.getLogger("archsearch")

OWN = ("top", "seeds", "trials", "force", "distinct")
ARCH_KEYS = ("model", "budget", "hydra.searchpath")  # sweep-command overrides that shape the trial's architecture
DEFAULT_TOP = 3


# ------------------------------------------------------------------ arguments
def split_args(argv: Sequence[str], own: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """``key=value`` arguments of the command itself (``own`` keys) apart from Hydra overrides."""
    mine: dict[str, str] = {}
    rest: list[str] = []
    for a in argv:
        key, eq, value = a.partition("=")
        if eq and key in own:
            mine[key] = value.strip()
        else:
            rest.append(a)
    return mine, rest


def positive_int(field_name: str, value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{field_name}: must be a whole number >= 1; got {value!r}")
    return int(value)


def boolean(field_name: str, value: str) -> bool:
    v = value.lower()
    if v not in ("true", "false"):
        raise ConfigError(f"{field_name}: must be true or false; got {value!r}")
    return v == "true"


@dataclass
class Args:
    top: int = DEFAULT_TOP
    seeds: int = 1
    trials: list[int] | None = None
    force: bool = False
    distinct: bool = True
    overrides: list[str] = field(default_factory=list)


def parse_args(argv: Sequence[str]) -> Args:
    mine, rest = split_args(argv, OWN)
    args = Args(overrides=rest)
    if "trials" in mine and "top" in mine:
        raise ConfigError("top: give either top=N (the best N trials) or trials=4,7 (those trials), not both")
    if "top" in mine:
        args.top = positive_int("top", mine["top"])
    if "seeds" in mine:
        args.seeds = positive_int("seeds", mine["seeds"])
    if "force" in mine:
        args.force = boolean("force", mine["force"])
    if "distinct" in mine:
        args.distinct = boolean("distinct", mine["distinct"])
    if "trials" in mine:
        items = [x.strip() for x in mine["trials"].strip("[]").split(",")]
        if not all(x.isdigit() for x in items):
            raise ConfigError(f"trials: expected trial numbers like trials=4,7; got {mine['trials']!r}")
        args.trials = list(dict.fromkeys(int(x) for x in items))
    return args


# ------------------------------------------------------------------ which trials, which config
def _state(trial) -> str:
    return trial.user_attrs.get("state") or trial.state.name


def complete_trials(study) -> list:
    """The trained COMPLETE trials (not the budget's rejections), best objective value first."""
    from optuna.study import StudyDirection

    done = [t for t in study.get_trials(deepcopy=False) if _state(t) == "COMPLETE" and t.values]
    best_high = study.directions[0] == StudyDirection.MAXIMIZE
    return sorted(done, key=lambda t: (-t.values[0] if best_high else t.values[0], t.number))


def distinct_architectures(trials: list, by_score: bool = False) -> list:
    """The best trial of each architecture (its sampled ``model.*`` values), in order: TPE
    often settles on one architecture and tunes the lr around it, and ``top=3`` should
    retrain three networks, not one three times. ``by_score``: of each score instead (a study
    scored without training cannot tell apart candidates with the same MACs, e.g. dilation
    variants of one network; the first of each is kept)."""
    seen, out = set(), []
    for t in trials:
        arch = tuple(t.values) if by_score else tuple(
            sorted((k, repr(v)) for k, v in t.params.items() if k.startswith("model.")))
        if arch not in seen:
            seen.add(arch)
            out.append(t)
    return out


def pick_trials(study, top: int | None, numbers: Sequence[int] | None, field_name: str = "trials",
                distinct: bool = True) -> list:
    """The ``top`` best COMPLETE trials (of distinct architectures unless ``distinct`` is false), or the trials ``numbers`` (each must be COMPLETE;
    ``field_name`` is the argument named in the error)."""
    done = complete_trials(study)
    name = study.study_name
    if not done:
        raise ConfigError(f"sweep: study {name!r} has no COMPLETE trial yet; run the sweep first: "
                          f"python -m archsearch.train -m sweep={name}")
    if numbers is None:
        from archsearch.report import scored_by

        return (distinct_architectures(done, bool(scored_by(study))) if distinct else done)[: top or DEFAULT_TOP]
    ok = {t.number: t for t in done}
    nums = sorted(ok)
    choices = ", ".join(map(str, nums[:30])) + (", ..." if len(nums) > 30 else "")
    every = {t.number: t for t in study.get_trials(deepcopy=False)}
    for n in numbers:
        if n not in every:
            raise ConfigError(f"{field_name}: study {name!r} has no trial {n}; choose one of the COMPLETE trials "
                              f"{choices}")
        if n not in ok:
            raise ConfigError(f"{field_name}: trial {n} of study {name!r} is {_state(every[n])}, not COMPLETE; "
                              f"choose one of {choices}")
    return [ok[n] for n in numbers]


def override_key(override: str) -> str:
    """``+model.x=1`` -> ``model.x``."""
    return override.lstrip("+~").partition("=")[0]


def _is_arch(override: str) -> bool:
    key = override_key(override)
    return any(key == k or key.startswith(k + ".") for k in ARCH_KEYS)


def sweep_overrides(study) -> tuple[list[str], list[str]]:
    """The sweep command's overrides as the sweeper recorded them: (reapplied: those that shape
    the architecture and its budget; not reapplied: the training settings)."""
    base = [str(o) for o in study.user_attrs.get("archsearch.base_overrides") or []]
    kept = [o for o in base if _is_arch(o)]
    other = [o for o in base if not _is_arch(o) and not override_key(o).startswith("hydra.")
             and override_key(o) != "sweep"]
    return kept, other


def trial_overrides(study, trial) -> list[str]:
    """What made the trial's architecture and recipe: the reapplied sweep-command overrides,
    then its sampled values (Optuna's parameter names are the override keys)."""
    kept, _ = sweep_overrides(study)
    return kept + [f"{k}={override_value(v)}" for k, v in trial.params.items()]


def run_overrides(study, trial, user: Sequence[str], seed: int | None) -> list[str]:
    """The full-recipe config of ``trial``: sweep, trial, ``proxy=none``, the user's, the seed."""
    sweep = [o for o in user if override_key(o) == "sweep"]
    rest = [o for o in user if override_key(o) != "sweep"]
    run_name = [f"run_name={override_value(f'{study.study_name}-t{trial.number}-full-s{seed}')}"]
    return [*sweep, *trial_overrides(study, trial), "proxy=none", *(run_name if seed is not None else []),
            *rest, *([f"seed={seed}"] if seed is not None else [])]


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


def _plan(study, trials: list, args: Args) -> tuple[list[_Plan], list[str]]:
    """Compose and budget-check every run before any trains; (runs to train, lines to print first)."""
    from archsearch.config import compose
    from archsearch.gate import gate

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
                _, report = gate(cfg)  # BudgetRejected / SpecError before anything trains (the seed changes no shape)
                skipped += shape_note(t, report.params)
            plans.append(_Plan(t, seed, ovs, cfg))
    return plans, skipped


def shape_note(trial, params: int) -> list[str]:
    """A warning when the rebuilt architecture is not the one the sweep trained (e.g. a study
    from before the sweeper recorded its command's ``model.*`` overrides)."""
    swept = trial.user_attrs.get("model.params")
    if swept is None or int(swept) == params:
        return []
    return [f"note: trial {trial.number} had {int(swept):,} params in the sweep, this config has {params:,}: pass the "
            "sweep command's model.* overrides again"]


def _describe(rec: dict) -> str:
    def f(v):
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"

    return (f"val_acc {f(rec.get('val_acc'))}, test_acc {f(rec.get('test_acc'))} "
            f"(single view {f(rec.get('test_acc_single_view'))}), {rec.get('epochs')} epochs, run {rec.get('run_id')}")


def _parent_run(tracker, study) -> str | None:
    rid = study.user_attrs.get("mlflow_parent_run_id")
    if not (tracker.enabled and rid):
        return None
    try:
        tracker.client.get_run(rid)
        return rid
    except Exception:
        log.warning("the study's MLflow parent run %s is not in %s: retrain runs are top-level", rid, tracker.uri)
        return None


def _data(cfg, base: Path):
    """Load a dataset once for all the runs that use it (the split depends on data.seed only)."""
    from omegaconf import OmegaConf

    from archsearch.data import load_data_once

    return load_data_once(OmegaConf.to_container(cfg.data, resolve=True), base)


def retrain_one(study, plan: _Plan, tracker, parent: str | None, base: Path) -> dict:
    """Train one planned run and record it in the study as ``retrain.t<trial>.s<seed>``."""
    from archsearch.job import train

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
    from archsearch.report import open_study

    args = parse_args(argv)
    cfg, study, url = open_study(args.overrides)
    trials = pick_trials(study, args.top, args.trials, distinct=args.distinct)
    plans, skipped = _plan(study, trials, args)
    return args, cfg, study, trials, plans, skipped


def _train_all(study, plans: list[_Plan], cfg) -> int:
    """Train the planned runs in order; -> how many failed (a non-finite loss; the others go on)."""
    from omegaconf import OmegaConf

    from archsearch.errors import NonFiniteLoss
    from archsearch.report import base_dir
    from archsearch.tracking import make_tracker

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


def main(argv: Sequence[str] | None = None) -> int:
    from archsearch.errors import AugError, BudgetError, DataError, SpecError, StudyError
    from archsearch.gate import BudgetRejected
    from archsearch.report import print_table, proxy_vs_full

    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return 0
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
    except BudgetRejected as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (ConfigError, SpecError, BudgetError, StudyError, DataError, AugError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
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


if __name__ == "__main__":
    from archsearch import cli

    cli.run(main)
