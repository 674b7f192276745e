"""A handle on one MLflow run (:class:`Tracker`) or on none (:class:`NullTracker`, tracking off), and
the experiment it lives in, created once per store."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

# mlflow stays out of this module's imports (seconds to import): only a Tracker loads it, so a run with
# tracking=none and the commands that import this module without tracking never pay for it

__all__ = ["EXPERIMENT_KIND", "EXPERIMENT_KIND_TAG", "NullTracker", "Tracker", "ensure_experiment", "flatten"]

# MLflow 3's experiment-level setting for the kind of experiment. MLflow 3.17's UI does not read it (its
# per-browser GenAI / Model training switch decides, see ui_link); other MLflow versions and clients may
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"  # shown as "Machine learning"


def flatten(d: Any, prefix: str = "", text: bool = True) -> dict[str, Any]:
    """Nested mappings/lists -> {"a.b.0.c": "value"} (MLflow params are flat strings; ``text=False``
    keeps the values as they are, so that 0 and 0.0 compare equal)."""
    out: dict[str, Any] = {}
    if isinstance(d, Mapping):
        items: Iterable = d.items()
    elif isinstance(d, (list, tuple)):
        items = enumerate(d)
    else:
        return {prefix: str(d)[:6000] if text else d}
    empty = True
    for k, v in items:
        empty = False
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k), text))
    if empty and prefix:
        out[prefix] = "[]" if isinstance(d, (list, tuple)) else "{}"
    return out


log = logging.getLogger("archsearch")


def keep_own_gpus(monitor, uuids: Sequence[str] | None) -> bool:
    """Narrow MLflow's GPU monitor to the GPUs of ``uuids`` (in that order) -> whether any is left."""
    import pynvml

    def norm(u) -> str:
        u = str(u.decode() if isinstance(u, bytes) else u).lower()
        return u[4:] if u.startswith("gpu-") else u

    by_uuid = {norm(pynvml.nvmlDeviceGetUUID(h)): h for h in monitor.gpu_handles}
    monitor.gpu_handles = [by_uuid[norm(u)] for u in uuids or () if norm(u) in by_uuid]
    monitor.num_gpus = len(monitor.gpu_handles)
    if uuids and not monitor.gpu_handles:
        log.warning("trainer.system_metrics: NVML does not list the run's GPU (%s; a MIG instance?): no GPU metrics",
                    ", ".join(map(str, uuids)))
    return bool(monitor.gpu_handles)


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
    def rename(self, name: str) -> None: ...
    def close_run(self, run_id: str, error: str, state: str | None = "INTERRUPTED") -> None: ...
    def set_run_tag(self, run_id: str, key: str, value: str) -> None: ...
    def delete_run(self, run_id: str) -> None: ...

    def reopen(self, run_id: str) -> bool:
        return False

    def has_run(self, run_id: str) -> bool:
        return False

    def find_run(self, tag: str, value: str) -> str | None:
        return None

    def child_metrics(self, parent_run_id: str) -> dict[str, dict[str, float]]:
        return {}

    def metric_total(self, run_id: str, key: str) -> float:
        return 0.0

    @contextlib.contextmanager
    def system_metrics(self, interval: float, resume: bool = False, gpu_uuids: Sequence[str] | None = None):
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
    def system_metrics(self, interval: float, resume: bool = False, gpu_uuids: Sequence[str] | None = None):
        """MLflow's system metrics (``system/cpu_utilization_percentage``, memory, disk, network;
        GPU with nvidia-ml-py) every ``interval`` seconds while the block runs, and once at its end
        (so a run shorter than the interval has one sample too). ``gpu_uuids``: the GPUs the run
        computes on (their UUIDs); NVML sees every GPU of the machine whatever CUDA_VISIBLE_DEVICES
        says, so only those are sampled, named ``gpu_0``... in the run's own order. None: no GPU."""
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        mon = SystemMetricsMonitor(self.run_id, sampling_interval=interval, resume_logging=resume,
                                   tracking_uri=self.uri)
        mon.monitors = [m for m in mon.monitors if not hasattr(m, "gpu_handles") or keep_own_gpus(m, gpu_uuids)]
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

    def rename(self, name: str) -> None:
        """This run's name (the runs table's first column), e.g. once a trial ends: ``t12 val 0.853 187k``."""
        if self.run_id:
            self.client.update_run(self.run_id, name=name)

    # ------------------------------------------ other runs of the store, by id (the sweeper's bookkeeping)
    def close_run(self, run_id: str, error: str, state: str | None = "INTERRUPTED") -> None:
        """Run ``run_id``, if still RUNNING, closed as KILLED with the tag ``error`` (and the tag
        ``state``, unless None): a trial or a sweep that was stopped, or whose process died."""
        run = self.client.get_run(run_id)
        if run.info.status == "RUNNING":
            if state:
                self.client.set_tag(run_id, "state", state)
            trial = run.data.tags.get("trial_number")
            if state == "INTERRUPTED" and trial is not None:  # a trial's run says so in the runs table
                self.client.update_run(run_id, name=f"t{trial} interrupted")
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

    # ------------------------------------------ finding runs
    def has_run(self, run_id: str) -> bool:
        """Whether this store holds run ``run_id``."""
        try:
            self.client.get_run(run_id)
        except Exception:  # MLflow raises its own error for an unknown id
            return False
        return True

    def find_run(self, tag: str, value: str) -> str | None:
        """The id of a run of this experiment whose tag ``tag`` is ``value``, or None."""
        found = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{tag}` = '{value}'",
                                        max_results=1)
        return found[0].info.run_id if found else None

    def child_metrics(self, parent_run_id: str) -> dict[str, dict[str, float]]:
        """{run id: its latest metrics} of the runs nested under ``parent_run_id``."""
        runs = self.client.search_runs([self.experiment_id],
                                       filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
                                       max_results=5000)
        return {r.info.run_id: dict(r.data.metrics) for r in runs}

    def metric_total(self, run_id: str, key: str) -> float:
        """The sum of every value run ``run_id`` logged for metric ``key`` (e.g. epoch_seconds)."""
        return sum(m.value for m in self.client.get_metric_history(run_id, key))


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


