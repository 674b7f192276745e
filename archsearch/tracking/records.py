"""The run lifecycle of a training run (opened, nested, closed with the state it ended in) and the
runs of candidates that were not trained: scored by their analysis, or rejected by the budget.

Statuses read as a user of MLflow's UI reads them: a run that did what it was asked (completed,
pruned by the pruner, refused by the budget before training) is FINISHED, its real state in the
tag ``state``; FAILED is a real failure, KILLED a run stopped from outside (Ctrl-C, SIGTERM, a
worker that died). A sweep trial's run is named so that trials tell apart in the runs table and
say how they did (:func:`trial_run_name`), and every run carries the figures users compare as
metrics under short names (:data:`COMPARE`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from archsearch.errors import Pruned
from archsearch.tracking.tracker import Tracker

# the columns users compare, as metrics of every run (trained, scored, rejected) where known
COMPARE = ("val_acc", "test_acc", "params", "rf", "macs", "epochs")


def trial_run_name(number: int, state: str, *, val: float | None = None, params: int | None = None,
                   epoch: int | None = None) -> str:
    """A sweep trial's run name: ``t12 val 0.853 187k`` (complete), ``t13 pruned@3``, ``t14 rejected``,
    ``t15 failed``, ``t16 interrupted``; ``t12 training`` while it runs."""
    size = f" {params / 1000:.0f}k" if params else ""
    if state == "COMPLETE" and val is not None:
        return f"t{number} val {val:.3f}{size}"
    if state == "SCORED":
        return f"t{number} scored{size}"
    if state == "PRUNED":
        return f"t{number} pruned@{epoch}" if epoch else f"t{number} pruned"
    words = {"REJECTED": "rejected", "FAIL": "failed", "INTERRUPTED": "interrupted", "RUNNING": "training"}
    return f"t{number} {words.get(state, state.lower())}"


def size_metrics(analysis: Any) -> dict[str, float]:
    """params, rf and macs of an analysis as the short-named metrics (empty without one)."""
    if analysis is None:
        return {}
    return {k: float(getattr(analysis, k)) for k in ("params", "rf", "macs")}


@contextlib.contextmanager
def run_lifecycle(tracker, name: str, tags: Mapping[str, Any], parent_run_id: str | None = None,
                  run_id: str | None = None, trial: int | None = None):
    """Open (or, with ``run_id``, reopen) a run and always close it with what happened:
    FINISHED + state COMPLETE when the block ends normally; FINISHED + state PRUNED when the
    pruner stops it (the pruner did its job: not a crash); KILLED on Ctrl-C / SIGTERM; FAILED +
    the error as a tag otherwise. With ``trial`` (a sweep trial's number) a pruned, failed or
    interrupted run is renamed to say so (``t13 pruned@3``); a completed one is renamed by its job."""
    tracker.start(name=name, tags=tags, parent_run_id=parent_run_id, run_id=run_id)
    status = "FAILED"
    try:
        yield tracker
        status = "FINISHED"
        tracker.set_tags({"state": "COMPLETE"})
    except Pruned as e:
        status = "FINISHED"
        tracker.set_tags({"state": "PRUNED"})
        if trial is not None:
            tracker.rename(trial_run_name(trial, "PRUNED", epoch=e.epoch))
        raise
    except BaseException as e:
        interrupted = isinstance(e, (KeyboardInterrupt, SystemExit))
        if interrupted:
            status = "KILLED"  # not a failure of the spec, but not complete either
        if tracker.enabled and tracker.run_id:
            tracker.set_tags({"error": f"{type(e).__name__}: {e}"[:4000] or "interrupted", "state": "FAIL"})
            if trial is not None:
                tracker.rename(trial_run_name(trial, "INTERRUPTED" if interrupted else "FAIL"))
        raise
    finally:
        tracker.end(status)


def _record_untrained(tracker: Tracker, parent_run_id: str | None, name: str, params: Mapping[str, Any],
                      tags: Mapping[str, Any], status: str, metrics: Mapping[str, float] | None = None) -> str | None:
    """An MLflow run for a candidate the sweep did not train (scored or rejected); None when tracking is off."""
    if not tracker.enabled:
        return None
    t = tracker.for_run()
    t.start(name=name, parent_run_id=parent_run_id, tags=tags)
    t.log_params(params)
    if metrics:
        t.log_metrics(dict(metrics))
    t.end(status)
    return t.run_id


def record_scored(tracker: Tracker, parent_run_id: str | None, name: str, params: Mapping[str, Any],
                  metrics: Mapping[str, float], tags: Mapping[str, Any] | None = None,
                  analysis: Any = None) -> str | None:
    """An MLflow run (status FINISHED, tag state=COMPLETE) for a candidate a sweep scored without
    training it (objectives the analysis gives: params, MACs, RF; also as the short-named metrics)."""
    return _record_untrained(tracker, parent_run_id, name, params, {"state": "COMPLETE", **(tags or {})},
                             "FINISHED", {**metrics, **size_metrics(analysis), "epochs": 0.0})


def record_rejected(tracker: Tracker, parent_run_id: str | None, name: str, reasons: list[str],
                    params: Mapping[str, Any], tags: Mapping[str, Any] | None = None,
                    analysis: Any = None) -> str | None:
    """An MLflow run (status FINISHED: the budget did its job, nothing crashed; tag state=REJECTED)
    for a candidate the budget refused, with its params, RF and MACs as metrics where known."""
    metrics = {**size_metrics(analysis), "epochs": 0.0}
    return _record_untrained(tracker, parent_run_id, name, params,
                             {"state": "REJECTED", "reasons": "; ".join(reasons)[:4900], **(tags or {})},
                             "FINISHED", metrics)
