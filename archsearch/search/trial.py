"""The contract between the sweeper and a training job it launches.

The sweeper passes a trial's coordinates as ``+trial.*`` overrides (:class:`TrialRef`
writes and reads them, one schema for both sides); the job reports validation accuracy to
the study's storage after every epoch and raises :class:`Pruned` when the pruner says so.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from archsearch.errors import Pruned
from archsearch.search.study import make_pruner, open_storage, retrying

__all__ = ["TrialRef", "pruning_hook", "trial_job_kwargs"]


@dataclass(frozen=True, kw_only=True)
class TrialRef:
    """Where a launched job finds its Optuna trial (and its MLflow parent run)."""

    study_name: str
    storage: str
    number: int
    trial_id: int
    parent_run_id: str | None = None

    def overrides(self, fmt: Callable[[Any], str]) -> list[str]:
        """The ``+trial.*`` overrides for the job; ``fmt`` quotes a value for Hydra."""
        out = [f"+trial.study_name={fmt(self.study_name)}", f"+trial.storage={fmt(self.storage)}",
               f"+trial.number={self.number}", f"+trial.trial_id={self.trial_id}"]
        if self.parent_run_id:
            out.append(f"+trial.parent_run_id={self.parent_run_id}")
        return out

    @classmethod
    def from_cfg(cls, node: Mapping[str, Any] | None) -> TrialRef | None:
        """The job's side: ``cfg.trial`` -> TrialRef, or None outside a sweep."""
        if not node:
            return None
        return cls(study_name=str(node["study_name"]), storage=str(node["storage"]), number=int(node["number"]),
                   trial_id=int(node["trial_id"]), parent_run_id=node.get("parent_run_id"))


def pruning_hook(ref: TrialRef, max_epochs: int):
    """-> (epoch_hook, run_started) for the training job: report val accuracy to the study's
    storage every epoch, raise :class:`Pruned` when the study's pruner says so, and record
    the MLflow run id on the trial. Works from any process or machine that reaches the storage."""
    import optuna  # here, not at the top: archsearch.train imports this module, a plain run needs no optuna

    storage = open_storage(ref.storage)
    study = optuna.load_study(study_name=ref.study_name, storage=storage)
    pconf = study.user_attrs.get("archsearch.pruner") or {"name": "none"}
    study.pruner = make_pruner(pconf, max_epochs)
    trial = optuna.Trial(study, ref.trial_id)
    single = len(study.directions) == 1  # Optuna cannot prune multi-objective studies
    prune = pconf.get("name", "none") != "none" and single

    def hook(epoch: int, val_acc: float) -> None:
        if not single:
            return
        retrying(trial.report, val_acc, epoch)  # a database restart mid-trial is waited out
        if prune and epoch < max_epochs and retrying(trial.should_prune):  # nothing left to save at the end
            raise Pruned(epoch, val_acc)

    def run_started(run_id: str) -> None:
        retrying(trial.set_user_attr, "mlflow_run_id", run_id)

    return hook, run_started


def trial_job_kwargs(ref: TrialRef, max_epochs: int) -> dict[str, Any]:
    """What :func:`archsearch.training.job.train` takes to run as a sweep trial, in the sweeper's process or
    a trial process of its own: the pruning hook, the MLflow parent run and the trial's tags."""
    hook, started = pruning_hook(ref, max_epochs)
    return {"epoch_hook": hook, "run_started": started, "parent_run_id": ref.parent_run_id,
            "run_tags": {"trial_number": ref.number, "study": ref.study_name}}
