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


# ------------------------------------------------------------------ the runs table at a glance
def test_every_run_carries_the_compared_columns_as_metrics(store):
    for run in (store["plain"], store["sysmetrics"]):
        m = run.data.metrics
        assert {"val_acc", "test_acc", "params", "rf", "macs", "epochs"} <= set(m)
        assert m["params"] > 0 and m["rf"] >= 44 and m["macs"] > 0 and m["epochs"] == 1
    assert store["plain"].info.run_name.startswith("dilated_sep-")  # a single run keeps <model>-<hash>


@pytest.mark.parametrize("state, kw, name", [
    ("COMPLETE", {"val": 0.85312, "params": 186_984}, "t12 val 0.853 187k"),
    ("PRUNED", {"epoch": 3}, "t13 pruned@3"),
    ("REJECTED", {}, "t14 rejected"),
    ("FAIL", {}, "t15 failed"),
    ("INTERRUPTED", {}, "t16 interrupted"),
    ("RUNNING", {}, "t17 training"),
])
def test_trial_run_names_tell_trials_apart_and_say_how_they_did(state, kw, name):
    from archsearch.tracking import trial_run_name

    assert trial_run_name(int(name.split()[0][1:]), state, **kw) == name


@pytest.mark.parametrize("raised, status, state, name", [
    (None, "FINISHED", "COMPLETE", "t7 training"),  # (the job names a completed trial by its score)
    ("pruned", "FINISHED", "PRUNED", "t7 pruned@2"),  # the pruner did its job: no red mark
    (RuntimeError("boom"), "FAILED", "FAIL", "t7 failed"),
    (KeyboardInterrupt(), "KILLED", "FAIL", "t7 interrupted"),
])
def test_a_trials_run_ends_with_a_status_that_reads_as_what_happened(tmp_path, raised, status, state, name):
    from mlflow.tracking import MlflowClient

    from archsearch.errors import Pruned
    from archsearch.tracking import make_tracker, run_lifecycle

    tracker = make_tracker({"uri": _uri(tmp_path)})
    exc = Pruned(2, 0.3) if raised == "pruned" else raised
    try:
        with run_lifecycle(tracker, "t7 training", {"trial_number": 7}, trial=7):
            if exc is not None:
                raise exc
    except BaseException as e:
        assert e is exc
    run = MlflowClient(_uri(tmp_path)).get_run(tracker.run_id)
    assert (run.info.status, run.data.tags["state"], run.info.run_name) == (status, state, name)


def test_a_rejected_candidate_is_finished_not_killed_with_its_size_as_metrics(tmp_path):
    from types import SimpleNamespace

    from mlflow.tracking import MlflowClient

    from archsearch.tracking import make_tracker, record_rejected

    tracker = make_tracker({"uri": _uri(tmp_path)})
    analysis = SimpleNamespace(params=250_000, rf=61, macs=9_000_000)
    rid = record_rejected(tracker, None, "t3 rejected", ["params 250,000 exceed max_params 200,000"], {"model.wide": 72},
                          analysis=analysis)
    run = MlflowClient(_uri(tmp_path)).get_run(rid)
    assert run.info.status == "FINISHED" and run.data.tags["state"] == "REJECTED"
    assert run.data.metrics == {"params": 250_000, "rf": 61, "macs": 9_000_000, "epochs": 0}


# ------------------------------------------------------------------ what the first epochs say
def test_the_first_epochs_validation_is_not_thrown_by_stale_batchnorm_statistics(tmp_path):
    """Epochs of 11 steps used to validate with BatchNorm running averages that still held a third of
    their initial values: here val loss 2.45, accuracy 0.08 after epoch 1 (worse than a guess), 0.39 after
    epoch 2; the defaults on 1,800 images gave val loss 221. They are recomputed on such short epochs
    (here: 1.36 / 0.34, then 0.59)."""
    res = _train(tmp_path, "tracking=none", "trainer.epochs=2")
    first = res.history[0]
    assert first["val_loss"] < np.log(10) and first["val_acc"] >= 0.2  # better than a uniform guess
    assert res.history[-1]["val_acc"] >= 0.5


def test_batchnorm_statistics_recomputed_match_the_batch_statistics():
    import torch

    from archsearch.training.evaluate import bn_lags, refresh_bn_stats

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
    x = np.random.default_rng(0).integers(0, 255, size=(64, 8, 8, 3), dtype=np.uint8)
    zero, one = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1) / 255
    net.eval()
    refresh_bn_stats(net, x, torch.device("cpu"), zero, one, False, batch_size=64, batches=1)
    xb = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        batch_mean = net[0](xb).mean((0, 2, 3))
    assert torch.allclose(net[1].running_mean, batch_mean, atol=1e-5) and not net.training
    assert net[1].momentum == 0.1  # put back
    assert bn_lags(net, 11) and not bn_lags(net, 352)  # a synthetic epoch lags; a CIFAR-10 epoch does not


def test_no_progress_bar_when_the_output_is_not_a_terminal(tmp_path, capfd):
    _train(tmp_path, "tracking=none", "trainer.progress=true")
    out, err = capfd.readouterr()
    assert "img_s=" not in out + err and "it/s" not in out + err  # tqdm's bar
