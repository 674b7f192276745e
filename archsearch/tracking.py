"""MLflow, and only here. Uses ``MlflowClient`` (no global active run), so a run can be
opened, nested under a parent and closed from any process of a sweep.

Default store: ``sqlite:///<cwd>/mlruns/mlflow.db`` with artifacts under ``mlruns/artifacts``
(MLflow >= 3.13 refuses the plain ``./mlruns`` file store). Compare runs with::

    mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db

What a run records beyond params/metrics/artifacts, so that MLflow's own UI is filled: the
experiment is marked as a training ("Machine learning") experiment, the dataset is a dataset
input, the best weights a logged PyTorch model linked to the run and its metrics
(``tracking.log_model``), and CPU / memory / GPU use as system metrics on request
(``trainer.system_metrics``). MLflow 3.17's UI also keeps a per-browser "GenAI / Machine
learning" switch; ``#/experiments/<id>/runs?workflowType=machine_learning`` sets it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from archsearch.errors import ConfigError, Pruned

# mlflow stays out of this module's imports (seconds to import): only a Tracker loads it, so a run with
# tracking=none and the commands that import this module without tracking never pay for it

__all__ = ["EXPERIMENT_KIND", "EXPERIMENT_KIND_TAG", "NullTracker", "Tracker", "default_uri", "flatten",
           "make_tracker", "run_lifecycle"]

# MLflow 3's experiment-level setting for the kind of experiment. MLflow 3.17's UI does not read it (its
# per-browser GenAI / Model training switch decides, see ui_link); other MLflow versions and clients may
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"  # shown as "Machine learning"


def default_uri(base: str | Path | None = None) -> str:
    base = Path(base or os.getcwd()).resolve()
    return f"sqlite:///{base / 'mlruns' / 'mlflow.db'}"


def flatten(d: Any, prefix: str = "") -> dict[str, str]:
    """Nested mappings/lists -> {"a.b.0.c": "value"} (MLflow params are flat strings)."""
    out: dict[str, str] = {}
    if isinstance(d, Mapping):
        items: Iterable = d.items()
    elif isinstance(d, (list, tuple)):
        items = enumerate(d)
    else:
        return {prefix: str(d)[:6000]}
    empty = True
    for k, v in items:
        empty = False
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    if empty and prefix:
        out[prefix] = "[]" if isinstance(d, (list, tuple)) else "{}"
    return out


class NullTracker:
    """``tracking=none``: same interface, records nothing."""

    run_id: str | None = None
    enabled = False

    def start(self, *a, **k) -> NullTracker:
        return self

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def set_tags(self, tags: Mapping[str, Any]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...
    def log_artifact(self, path: str | Path, subdir: str | None = None) -> None: ...
    def log_text(self, text: str, name: str) -> None: ...
    def log_dataset(self, name: str, digest: str, source_type: str, source: Mapping[str, Any],
                    profile: Mapping[str, Any], schema: Mapping[str, Any] | None = None) -> None: ...
    def log_model(self, *a, **k) -> str | None: ...
    def end(self, status: str = "FINISHED") -> None: ...
    def close_run(self, run_id: str, error: str, state: str | None = "INTERRUPTED") -> None: ...
    def set_run_tag(self, run_id: str, key: str, value: str) -> None: ...
    def delete_run(self, run_id: str) -> None: ...

    def reopen(self, run_id: str) -> bool:
        return False

    @contextlib.contextmanager
    def system_metrics(self, interval: float, resume: bool = False):
        yield


class Tracker:
    enabled = True

    def __init__(self, uri: str, experiment: str):
        from mlflow.tracking import MlflowClient

        self.uri = uri
        with _db_lock(uri):  # parallel first-time schema creation on SQLite races: serialise it
            self.client = MlflowClient(tracking_uri=uri)
            self.experiment_id = ensure_experiment(self.client, uri, experiment)
        self.run_id: str | None = None

    def for_run(self, run_id: str | None = None) -> Tracker:
        """Another handle on the same store and experiment (no reconnect), for ``run_id`` or a new run."""
        t = Tracker.__new__(Tracker)
        t.uri, t.client, t.experiment_id, t.run_id = self.uri, self.client, self.experiment_id, run_id
        return t

    def start(self, name: str | None = None, tags: Mapping[str, Any] | None = None,
              parent_run_id: str | None = None, run_id: str | None = None) -> Tracker:
        if run_id:  # resume an existing run
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
            return self
        t = {k: str(v) for k, v in (tags or {}).items()}
        if parent_run_id:
            t["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=t)
        self.run_id = run.info.run_id
        return self

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        ms = [Metric(k, float(v), ts, step or 0) for k, v in metrics.items() if v is not None]
        for i in range(0, len(ms), 1000):
            self.client.log_batch(self.run_id, metrics=ms[i:i + 1000])

    def log_artifact(self, path: str | Path, subdir: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), subdir)

    def log_text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, text, name)

    def log_dataset(self, name: str, digest: str, source_type: str, source: Mapping[str, Any],
                    profile: Mapping[str, Any], schema: Mapping[str, Any] | None = None) -> None:
        """One dataset input (the runs table's Dataset column), used for training."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        ds = Dataset(name=name, digest=digest, source_type=source_type, source=json.dumps(dict(source)),
                     schema=json.dumps(dict(schema)) if schema else None, profile=json.dumps(dict(profile)))
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(ds, [InputTag("mlflow.data.context", "train")])])

    def log_model(self, model, example, step: int, name: str = "model", params: Mapping[str, Any] | None = None,
                  metadata: Mapping[str, Any] | None = None) -> str:
        """``model`` (a torch module) as an MLflow 3 LoggedModel of this run: a PyTorch flavour with
        the signature of ``example`` -> its output, the run's metrics at ``step`` linked to it.
        Through the client only (no active run, the global tracking URI untouched) -> model id."""
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus

        lm = self.client.create_logged_model(self.experiment_id, name=name, source_run_id=self.run_id,
                                             params={k: str(v) for k, v in (params or {}).items()},
                                             model_type="pytorch")
        try:
            with tempfile.TemporaryDirectory() as tmp:
                _save_pytorch(model, example, Path(tmp) / name, lm, self.run_id, metadata)
                self.client.log_model_artifacts(lm.model_id, str(Path(tmp) / name))
            self.client.log_outputs(self.run_id, [LoggedModelOutput(lm.model_id, step)])
            self._link_metrics(lm.model_id, step)
        except BaseException:
            self.client.finalize_logged_model(lm.model_id, LoggedModelStatus.FAILED)
            raise
        self.client.finalize_logged_model(lm.model_id, LoggedModelStatus.READY)
        return lm.model_id

    def _link_metrics(self, model_id: str, step: int) -> None:
        """The run's metrics at ``step`` also as the model's (its page's Metrics table)."""
        from mlflow.entities import Metric

        ms = []
        for key in self.client.get_run(self.run_id).data.metrics:
            if key.startswith("system/"):  # sampled on their own steps, not the model's epoch
                continue
            ms += [Metric(m.key, m.value, m.timestamp, m.step, run_id=self.run_id, model_id=model_id)
                   for m in self.client.get_metric_history(self.run_id, key)
                   if m.step == step and m.model_id is None]
        for i in range(0, len(ms), 1000):
            self.client.log_batch(self.run_id, metrics=ms[i:i + 1000])

    @contextlib.contextmanager
    def system_metrics(self, interval: float, resume: bool = False):
        """MLflow's system metrics (``system/cpu_utilization_percentage``, memory, disk, network;
        GPU with nvidia-ml-py) every ``interval`` seconds while the block runs, and once at its end
        (so a run shorter than the interval has one sample too)."""
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        mon = SystemMetricsMonitor(self.run_id, sampling_interval=interval, resume_logging=resume,
                                   tracking_uri=self.uri)
        mon.start()
        try:
            yield
        finally:
            mon.finish()
            mon.collect_metrics()
            mon.publish_metrics(mon.aggregate_metrics())
            mon.mlflow_logger.flush()

    def end(self, status: str = "FINISHED") -> None:
        if self.run_id:
            self.client.set_terminated(self.run_id, status=status)

    # ------------------------------------------ other runs of the store, by id (the sweeper's bookkeeping)
    def close_run(self, run_id: str, error: str, state: str | None = "INTERRUPTED") -> None:
        """Run ``run_id``, if still RUNNING, closed as KILLED with the tag ``error`` (and the tag
        ``state``, unless None): a trial or a sweep that was stopped, or whose process died."""
        if self.client.get_run(run_id).info.status == "RUNNING":
            if state:
                self.client.set_tag(run_id, "state", state)
            self.client.set_tag(run_id, "error", error[:4000])
            self.client.set_terminated(run_id, "KILLED")

    def reopen(self, run_id: str) -> bool:
        """Run ``run_id`` RUNNING again if it was stopped (or finished), its ``error`` tag dropped (why
        it was stopped: no longer so) -> True; False when the store cannot give the run."""
        try:
            run = self.client.get_run(run_id)
        except Exception:
            return False
        if run.info.status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
            if "error" in run.data.tags:
                self.client.delete_tag(run_id, "error")
        return True

    def set_run_tag(self, run_id: str, key: str, value: str) -> None:
        """One tag on run ``run_id`` (not necessarily this handle's run)."""
        self.client.set_tag(run_id, key, value)

    def delete_run(self, run_id: str) -> None:
        self.client.delete_run(run_id)


def _save_pytorch(model, example, path: Path, lm, run_id: str, metadata: Mapping[str, Any] | None) -> None:
    """MLflow's PyTorch flavour in ``path``: the pickled module (loading needs archsearch installed;
    MLflow's default, ``torch.export``, cost 7 s here and fixed the batch size to 1), the signature
    from ``example``, explicit requirements (no inference subprocess)."""
    import mlflow.pytorch
    import torch
    from mlflow.models import Model, infer_signature

    model = model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(example)).numpy()
    mm = Model(artifact_path=lm.artifact_location, model_uuid=lm.model_id, run_id=run_id, model_id=lm.model_id)
    quiet = logging.getLogger("mlflow.pytorch")  # its pickle warning, once per run: chosen, said here
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        mlflow.pytorch.save_model(model, str(path), mlflow_model=mm, signature=infer_signature(example, out),
                                  input_example=example, metadata=dict(metadata or {}),
                                  pip_requirements=mlflow.pytorch.get_default_pip_requirements(),
                                  serialization_format="pickle")
    finally:
        quiet.setLevel(level)


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


@contextlib.contextmanager
def _db_lock(uri: str):
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.parent / ".mlflow-db.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_experiment(client, uri: str, name: str) -> str:
    """Create the SQLite DB directory and the experiment (artifacts next to the DB) once."""
    artifact_location = None
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        db.parent.mkdir(parents=True, exist_ok=True)
        artifact_location = (db.parent / "artifacts").as_uri()
    for attempt in range(5):
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            if EXPERIMENT_KIND_TAG not in exp.tags:  # made before archsearch set it (or by hand)
                client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            return exp.experiment_id
        try:
            return client.create_experiment(name, artifact_location=artifact_location,
                                            tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except Exception:  # another process created it first (or schema race): look again
            time.sleep(0.2 * (attempt + 1))
    exp = client.get_experiment_by_name(name)
    if exp is None:
        raise RuntimeError(f"tracking: could not create MLflow experiment {name!r} at {uri}")
    return exp.experiment_id


def ui_link(tracker, run_id: str | None = None) -> str | None:
    """Where a user sees the experiment's runs (or one run) in the MLflow UI, opened on "Model training":
    MLflow 3.17's UI decides GenAI vs model training from a per-browser switch (default GenAI, an empty
    Overview) that the ``workflowType`` parameter sets; the experiment tag alone does not."""
    if not getattr(tracker, "enabled", False):
        return None
    uri = str(tracker.uri)
    served = uri.startswith(("http://", "https://"))  # a tracking server; else a store `mlflow ui` serves
    base = uri.rstrip("/") if served else "http://127.0.0.1:5000"
    page = f"runs/{run_id}" if run_id else "runs"
    link = f"{base}/#/experiments/{tracker.experiment_id}/{page}?workflowType=machine_learning"
    return link if served else f"{link} (after: mlflow ui --backend-store-uri {uri})"


def make_tracker(cfg: Mapping[str, Any] | None, base_dir: str | Path | None = None):
    """``cfg`` is the ``tracking`` config group."""
    if not cfg or not cfg.get("enabled", True):
        return NullTracker()
    for key in ("log_model", "log_checkpoint"):
        if not isinstance(cfg.get(key, True), bool):
            raise ConfigError(f"tracking.{key}: must be true or false; got {cfg.get(key)!r}")
    uri = cfg.get("uri") or default_uri(base_dir)
    return Tracker(uri, cfg.get("experiment") or "archsearch")
