"""Crash recovery for the sweeper's study: a trial whose worker or process died, or that a stopped
sweep left behind, is failed as INTERRUPTED (not counted as trained), its parameters re-queued
once and its MLflow run closed as KILLED; the heartbeat a running trial sends on an RDB storage,
by which another machine tells that its worker is gone; and the study's MLflow run closed when
the sweep is stopped.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from archsearch.search.study import count_states, pid_alive, retrying
from archsearch.tracking import NullTracker, Tracker

__all__ = ["Heartbeat", "Recovery", "heartbeat_interval"]

log = logging.getLogger("archsearch.sweep")


def heartbeat_interval(study: optuna.Study) -> int | None:
    """Seconds between heartbeats of an RDB storage with heartbeats on (the study's storage is Optuna's
    cache around it); None for the journal file."""
    get = getattr(study._storage, "get_heartbeat_interval", None)
    return get() if get else None


class Recovery:
    """Recovers one study's interrupted trials, as one sweeper sees them."""

    def __init__(self, *, study: optuna.Study, storage: Any, tracker: Tracker | NullTracker) -> None:
        self.study = study
        self.storage = storage  # what open_storage gave: the RDB storage reads its stale trials
        self.tracker = tracker
        self._stale_checked = 0.0  # when fail_stale last looked

    def recover(self) -> None:
        """Trials left RUNNING by a worker that died (SIGKILL, power cut): on this host found by their
        pid, on an RDB storage by their heartbeat (any host). Each is failed as INTERRUPTED (not
        counted), its parameters re-queued once and its MLflow run closed."""
        self.fail_stale()
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            w = t.user_attrs.get("worker")
            if w is None or pid_alive(w) is not False:
                continue
            self.interrupted(t, f"worker {w} died during the trial")

    def fail_stale(self) -> None:
        """RDB storages: RUNNING trials whose worker sent no heartbeat for grace_period seconds (killed,
        machine lost), from any host, are failed as INTERRUPTED and re-queued. Optuna's own
        fail_stale_trials fails them first and cannot annotate them after, so this reads the stale ids."""
        interval = heartbeat_interval(self.study)
        if not interval or time.time() - self._stale_checked < interval / 2:
            return
        self._stale_checked = time.time()
        for tid in retrying(self.storage._get_stale_trial_ids, self.study._study_id):
            t = self.study._storage.get_trial(tid)
            try:
                self.interrupted(t, f"no heartbeat from its worker {t.user_attrs.get('worker')}")
            except UpdateFinishedTrialError:
                pass  # another worker failed it first (and re-queued it)

    def interrupted(self, trial, why: str) -> None:
        """A trial whose process was stopped or killed (not the trial's fault): failed as INTERRUPTED (not
        counted) and its parameters re-queued once, as for a worker found dead at start-up."""
        study = self.study
        frozen = study._storage.get_trial(trial._trial_id)
        study._storage.set_trial_user_attr(trial._trial_id, "state", "INTERRUPTED")
        study._storage.set_trial_user_attr(trial._trial_id, "error", why)
        # the storage's own transition: raises UpdateFinishedTrialError if another worker failed it first
        study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        if frozen.params and not frozen.user_attrs.get("retry_of"):
            study.enqueue_trial(frozen.params, user_attrs={"retry_of": frozen.number}, skip_if_exists=False)
        self.close_run(frozen.user_attrs.get("mlflow_run_id"), why)
        log.warning("trial %d INTERRUPTED (%s); re-queued", frozen.number, why)

    def close_run(self, run_id: str | None, why: str, state: str | None = "INTERRUPTED") -> None:
        """An interrupted trial's MLflow run, if still RUNNING: closed as KILLED with the reason."""
        if not run_id or not self.tracker.enabled:
            return
        try:
            self.tracker.close_run(run_id, why, state=state)
        except Exception as e:  # the tracking server is down: the run stays as it was, the sweep goes on
            log.warning("could not close MLflow run %s: %s", run_id, e)

    def sweep_stopped(self, parent: str | None) -> None:
        """The sweep was stopped: its MLflow parent run closed as KILLED (a resumed sweep reopens it),
        unless another worker still has a trial running in the study."""
        if not parent or not self.tracker.enabled:
            return
        try:
            c = count_states(self.study)
            if c["RUNNING"]:
                return
            self.tracker.set_run_tag(parent, "summary", f"stopped: {c['trained']} trained trials, "
                                     f"{c['REJECTED']} rejected; resume with the same command")
            self.close_run(parent, "the sweep was stopped", state=None)
        except Exception as e:  # the storage or tracking server is down: nothing more to close
            log.warning("could not close the study's MLflow run %s: %s", parent, e)


class Heartbeat:
    """RDB storages: record a heartbeat while the job runs so another machine can fail
    (and retry) the trial if this worker dies. No-op for the journal file."""

    def __init__(self, storage: Any, trial_id: int) -> None:
        self._stop = threading.Event()
        self._thread = None
        if hasattr(storage, "record_heartbeat") and getattr(storage, "heartbeat_interval", None):
            interval = float(storage.heartbeat_interval)  # the storage's, which grace_period is set against

            def beat():
                while not self._stop.wait(0):
                    try:
                        storage.record_heartbeat(trial_id)
                    except Exception:
                        pass
                    self._stop.wait(interval)
            self._thread = threading.Thread(target=beat, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
