"""What a user sees in the UIs they open: ``mlflow ui`` (the experiment opens on its runs; the
Dataset and Model columns, the model page and system metrics are filled) and optuna-dashboard
(serves a study's journal). CPU, synthetic data, MLflow in temp dirs."""

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from archsearch.config.compose import compose
from archsearch.errors import ConfigError

FAST = ["data=synthetic", "data.n_train=400", "data.n_test=100", "data.val_size=64", "trainer.batch_size=32",
        "trainer.progress=false", "trainer.workers=0", "trainer.amp=off", "trainer.channels_last=false",
        "trainer.tta=none", "model.wide=16", "model.narrow=8", "trainer.epochs=1"]
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"


def _uri(root: Path) -> str:
    return f"sqlite:///{root}/mlruns/mlflow.db"


def _train(root: Path, *extra):
    from archsearch.training.job import train

    uri = [] if "tracking=none" in extra else [f"tracking.uri={_uri(root)}"]
    return train(compose("config", [*FAST, *uri, *extra]), root / "out")


@pytest.fixture(scope="module")
def store(tmp_path_factory, _mlflow_schema_template):
    """One MLflow store with two 1-epoch runs: ``plain`` (defaults: dataset and model logged) and
    ``sysmetrics`` (``trainer.system_metrics=0.2``, ``tracking.log_model=false``)."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("ui-store")
    (root / "mlruns").mkdir()
    shutil.copyfile(_mlflow_schema_template, root / "mlruns" / "mlflow.db")
    plain = _train(root)
    sysm = _train(root, "trainer.system_metrics=0.2", "tracking.log_model=false")
    client = MlflowClient(_uri(root))
    return {"root": root, "client": client, "plain": client.get_run(plain.run_id),
            "sysmetrics": client.get_run(sysm.run_id)}


# ------------------------------------------------------------------ the experiment page
@pytest.mark.parametrize("before, after", [
    (None, KIND),                    # archsearch creates the experiment
    ({}, KIND),                      # made earlier without the setting: archsearch adds it
    ({KIND_TAG: "genai_development"}, "genai_development"),  # a user's own choice is kept
])
def test_the_experiment_opens_on_its_training_runs(tmp_path, before, after):
    from mlflow.tracking import MlflowClient

    from archsearch.tracking import make_tracker

    uri = _uri(tmp_path)
    client = MlflowClient(uri)
    if before is not None:
        client.create_experiment("archsearch", tags=before)
    tracker = make_tracker({"uri": uri, "experiment": "archsearch"})
    assert client.get_experiment(tracker.experiment_id).tags.get(KIND_TAG) == after


# ------------------------------------------------------------------ the runs table: Dataset
def test_each_run_has_its_dataset_as_an_input(store):
    runs = [store["plain"], store["sysmetrics"]]
    inputs = [r.inputs.dataset_inputs for r in runs]
    assert [len(i) for i in inputs] == [1, 1]
    ds = [i[0].dataset for i in inputs]
    assert ds[0].name == "synthetic" and ds[0].source_type == "synthetic"
    assert len(ds[0].digest) == 10 and ds[0].digest == ds[1].digest  # same data, same digest
    assert json.loads(ds[0].profile).items() >= {"train": 336, "val": 64, "test": 100, "classes": 10}.items()
    assert {t.key: t.value for t in inputs[0][0].tags} == {"mlflow.data.context": "train"}


@pytest.mark.parametrize("change, same", [([], True), (["data.val_size=32"], False), (["data.seed=1"], False),
                                          (["data.n_test=50"], False)])
def test_the_dataset_digest_names_the_exact_splits(change, same):
    from omegaconf import OmegaConf

    from archsearch.training.data import load_data
    from archsearch.training.run_log import dataset_input as _dataset_input

    def digest(extra):
        d = OmegaConf.to_container(compose("config", [*FAST, *extra]).data, resolve=True)
        return _dataset_input(d, load_data(d), Path("."))["digest"]

    assert (digest([]) == digest(change)) == same


# ------------------------------------------------------------------ the runs table: Model
def test_the_best_weights_are_a_logged_model_that_loads_and_classifies(store):
    import mlflow
    import mlflow.pytorch
    import torch
    from omegaconf import OmegaConf

    from archsearch.training.data import load_data

    run, client = store["plain"], store["client"]
    outs = run.outputs.model_outputs
    assert len(outs) == 1 and outs[0].step == 1
    lm = client.get_logged_model(outs[0].model_id)
    assert lm.status.to_proto() == 2 and lm.source_run_id == run.info.run_id  # READY
    assert {m.key for m in lm.metrics} >= {"val_acc", "train_loss", "best_val_acc"}  # the model page
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(_uri(store["root"]))
    try:
        model = mlflow.pytorch.load_model(f"models:/{lm.model_id}")
        info = mlflow.models.get_model_info(f"models:/{lm.model_id}")
    finally:
        mlflow.set_tracking_uri(previous)
    spec = info.signature.inputs.to_dict()[0]["tensor-spec"]
    assert spec["dtype"] == "float32" and list(spec["shape"]) == [-1, 3, 32, 32]
    d = load_data(OmegaConf.to_container(compose("config", FAST).data, resolve=True))
    x = torch.from_numpy((d.x_val.transpose(0, 3, 1, 2) / 255.0).astype(np.float32))
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (len(d.x_val), 10)
    acc = float((logits.argmax(1).numpy() == d.y_val).mean())
    assert abs(acc - run.data.metrics["best_val_acc"]) <= 2 / len(d.x_val)  # the run's own figure


def test_model_logging_can_be_switched_off(store):
    assert not store["sysmetrics"].outputs.model_outputs


# ------------------------------------------------------------------ system metrics
def test_system_metrics_appear_only_when_requested(store):
    keys = [set(store[k].data.metrics) for k in ("plain", "sysmetrics")]
    assert not any(k.startswith("system/") for k in keys[0])
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= keys[1]


@pytest.mark.parametrize("override, field", [
    ("trainer.system_metrics=-1", "trainer.system_metrics"),
    ("trainer.system_metrics=often", "trainer.system_metrics"),
    ("tracking.log_model=maybe", "tracking.log_model"),
])
def test_bad_settings_are_refused_in_one_line_naming_the_field(tmp_path, override, field):
    with pytest.raises(ConfigError) as e:
        _train(tmp_path, override)
    assert str(e.value).startswith(f"{field}:") and "\n" not in str(e.value)


def test_tracking_none_records_nothing_even_with_system_metrics(tmp_path):
    res = _train(tmp_path, "tracking=none", "trainer.system_metrics=0.2")
    assert res.run_id is None
    with sqlite3.connect(tmp_path / "mlruns" / "mlflow.db") as con:
        assert con.execute("select count(*) from runs").fetchone()[0] == 0
        assert con.execute("select count(*) from logged_models").fetchone()[0] == 0
        assert con.execute("select count(*) from experiments where name = 'archsearch'").fetchone()[0] == 0


# ------------------------------------------------------------------ optuna-dashboard
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str, deadline: float, proc) -> dict:
    """GET ``url`` until the server answers (or exits, or the deadline passes)."""
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.loads(r.read())
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_optuna_dashboard_serves_a_studys_journal(tmp_path):
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    journal = tmp_path / "mlruns" / "optuna" / "smoke.journal"  # where a sweep keeps it by default
    journal.parent.mkdir(parents=True)
    study = optuna.create_study(study_name="smoke", direction="maximize",
                                storage=JournalStorage(JournalFileBackend(str(journal))))
    study.optimize(lambda t: t.suggest_float("lr", 1e-3, 1.0, log=True), n_trials=3)
    exe = Path(sys.executable).with_name("optuna-dashboard")
    port = _free_port()
    proc = subprocess.Popen([str(exe), str(journal), "--host", "127.0.0.1", "--port", str(port), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ})
    try:
        base = f"http://127.0.0.1:{port}"
        studies = _get_json(f"{base}/api/studies", time.monotonic() + 30, proc)["study_summaries"]
        assert [s["study_name"] for s in studies] == ["smoke"]
        detail = _get_json(f"{base}/api/studies/{studies[0]['study_id']}", time.monotonic() + 10, proc)
        assert len(detail["trials"]) == 3 and detail["directions"] == ["maximize"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
