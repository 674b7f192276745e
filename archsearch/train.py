"""``python -m archsearch.train model=dilated_sep [overrides]``: the Hydra entry.

It wires the config to :func:`archsearch.training.job.train` and keeps the multirun bookkeeping:
a sweep process loads its dataset once, a plain multirun gets one MLflow parent run (its
refused jobs recorded as REJECTED runs), and a job launched by the archsearch sweeper
reports to its Optuna trial. User mistakes end in one line on stderr: exit 1 for the
budget, 2 for bad input, 3 for a loss that became non-finite.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from archsearch import cli
from archsearch.config.compose import check_choices
from archsearch.config.gate import BudgetRejected, gate
from archsearch.config.paths import CONF_DIR, base_dir
from archsearch.errors import ConfigError, NonFiniteLoss, Pruned
from archsearch.grammar.analysis import analyze
from archsearch.search.trial import TrialRef, trial_job_kwargs
from archsearch.tracking import make_tracker, record_rejected
from archsearch.training.data import load_data_once
from archsearch.training.job import train

__all__ = ["main"]

log = logging.getLogger("archsearch")


# ------------------------------------------------------------------ Hydra entry
def _cached_data(cfg, base_dir: Path):
    """A sweep process loads its dataset once and reuses it across trials."""
    return load_data_once(OmegaConf.to_container(cfg.data, resolve=True), base_dir)


def _multirun_parent(cfg, sweep_dir: str) -> str | None:
    """Plain Hydra multirun (basic sweeper): one MLflow parent run per multirun directory."""
    tr = make_tracker(OmegaConf.to_container(cfg.tracking, resolve=True))
    if not tr.enabled:
        return None
    key = str(Path(sweep_dir).resolve())
    found = tr.find_run("archsearch.multirun", key)
    if found:
        return found
    tr.start(name=f"multirun {Path(sweep_dir).name}", tags={"archsearch.multirun": key, "archsearch.role": "parent"})
    tr.end("FINISHED")
    return tr.run_id


def _record_rejection(cfg, e: BudgetRejected) -> None:
    """Plain multirun: the refused job still shows up under the multirun's parent run."""
    hc = HydraConfig.get()
    tr = make_tracker(OmegaConf.to_container(cfg.tracking, resolve=True))
    rep = analyze(e.spec)
    overrides = dict(o.split("=", 1) for o in hc.overrides.task if "=" in o)
    record_rejected(tr, _multirun_parent(cfg, hc.sweep.dir), f"{e.spec.name} (rejected)",
                    [v.message for v in e.violations],
                    {**overrides, "model.params": rep.params, "model.rf": rep.rf, "model.macs": rep.macs},
                    {"model": e.spec.name, "multirun_job": hc.job.num})


def _task(cfg) -> float | None:
    hc = HydraConfig.get()
    out_dir = hc.runtime.output_dir
    base = base_dir()
    ref = TrialRef.from_cfg(cfg.get("trial"))
    kw: dict[str, Any] = {}
    if ref is not None:  # launched by the archsearch sweeper
        kw = trial_job_kwargs(ref, int(cfg.trainer.epochs))
    elif hc.mode == RunMode.MULTIRUN:
        gate(cfg)  # refuse before _cached_data below loads the dataset
        kw = {"parent_run_id": _multirun_parent(cfg, hc.sweep.dir), "run_tags": {"multirun_job": hc.job.num}}
    res = train(cfg, out_dir, data=_cached_data(cfg, base) if hc.mode == RunMode.MULTIRUN else None, **kw)
    return res.val_acc


def main() -> None:
    """Console entry: user mistakes (:data:`archsearch.cli.USER_ERRORS`) -> one line on stderr; exit 1
    for budget, 2 for bad input. ``--help`` is Hydra's (the config groups and the composed config),
    so this command starts without :func:`archsearch.cli.start`."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        check_choices([a for a in sys.argv[1:] if not a.startswith("-")])
    except ConfigError as e:  # before Hydra's own, longer message for an unknown option
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)

    @hydra.main(version_base=None, config_path=str(CONF_DIR), config_name="config")
    def _entry(cfg) -> float | None:
        multirun = HydraConfig.get().mode == RunMode.MULTIRUN
        try:
            return _task(cfg)
        except BudgetRejected as e:
            print(f"REJECTED {e.spec.name}: {len(e.violations)} budget violation(s)", file=sys.stderr)
            for v in e.violations:
                print(f"  - {v.message}", file=sys.stderr)
            if multirun:
                _record_rejection(cfg, e)
                return None  # the other jobs of a plain multirun go on
            sys.exit(1)
        except Pruned:
            raise
        except (*cli.USER_ERRORS, NonFiniteLoss) as e:
            if multirun:
                raise  # the sweeper records the failure and goes on
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2 if not isinstance(e, NonFiniteLoss) else 3)

    try:
        _entry()
    except ValueError as e:  # Hydra's own check of its flags (e.g. -m with --cfg) raises a bare ValueError
        if not str(e).startswith("Only one of --run, --multirun"):
            raise
        print(f"error: {e}: drop -m to print one run's config or info", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    # the canonical module archsearch.train, not a second copy of it named __main__
    from archsearch.train import main as _main

    cli.run(_main)
