"""The run lifecycle of a training run (opened, nested, closed with the state it ended in) and the
runs of candidates that were not trained: scored by their analysis, or rejected by the budget.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from archsearch.errors import Pruned
from archsearch.tracking.tracker import Tracker


@contextlib.contextmanager
def run_lifecycle(tracker, name: str, tags: Mapping[str, Any], parent_run_id: str | None = None,
                  run_id: str | None = None):
    """Open (or, with ``run_id``, reopen) a run and always close it with what happened:
    FINISHED + state COMPLETE when the block ends normally; KILLED + state PRUNED when the
    pruner stops it; KILLED on Ctrl-C / SIGTERM; FAILED + the error as a tag otherwise."""
    tracker.start(name=name, tags=tags, parent_run_id=parent_run_id, run_id=run_id)
    status = "FAILED"
    try:
        yield tracker
        status = "FINISHED"
        tracker.set_tags({"state": "COMPLETE"})
    except Pruned:
        status = "KILLED"
        tracker.set_tags({"state": "PRUNED"})
        raise
    except BaseException as e:
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            status = "KILLED"  # not a failure of the spec, but not complete either
        if tracker.enabled and tracker.run_id:
            tracker.set_tags({"error": f"{type(e).__name__}: {e}"[:4000] or "interrupted", "state": "FAIL"})
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
                  metrics: Mapping[str, float], tags: Mapping[str, Any] | None = None) -> str | None:
    """An MLflow run (status FINISHED, tag state=COMPLETE) for a candidate a sweep scored without
    training it (objectives the analysis gives: params, MACs, RF)."""
    return _record_untrained(tracker, parent_run_id, name, params, {"state": "COMPLETE", **(tags or {})},
                             "FINISHED", metrics)


def record_rejected(tracker: Tracker, parent_run_id: str | None, name: str, reasons: list[str],
                    params: Mapping[str, Any], tags: Mapping[str, Any] | None = None) -> str | None:
    """An MLflow run (status KILLED, tag state=REJECTED) for a candidate the budget refused."""
    return _record_untrained(tracker, parent_run_id, name, params,
                             {"state": "REJECTED", "reasons": "; ".join(reasons)[:4900], **(tags or {})}, "KILLED")
