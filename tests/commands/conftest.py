"""Fixtures of the retrain, export and report tests: a real smoke sweep of three one-epoch trials,
and a study built by hand with a trial in each state."""

import shutil

import pytest
from studies import add_trial, journal_study, sweep_smoke

ENQUEUED = [{"model.wide": 32, "model.dropout": 0.0, "optim.lr": 0.05},
            {"model.wide": 48, "model.dropout": 0.0, "optim.lr": 0.05},
            {"model.wide": 32, "model.dropout": 0.05, "optim.lr": 0.02}]


@pytest.fixture(scope="session")
def swept(tmp_path_factory, _mlflow_schema_template):
    """A finished smoke study of 3 one-epoch trials (known parameters), its MLflow parent run."""
    d = tmp_path_factory.mktemp("swept")
    (d / "mlruns").mkdir()
    shutil.copyfile(_mlflow_schema_template, d / "mlruns" / "mlflow.db")
    st = journal_study(d)
    for p in ENQUEUED:
        st.enqueue_trial(p)
    p = sweep_smoke(d, "model.wide=choice(32,48)", "hydra.sweeper.n_trials=3", "hydra.sweeper.pruner={name:none}",
                    "hydra.sweep.dir=multirun/s")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return d


@pytest.fixture
def small_study(tmp_path, monkeypatch):
    """smoke: trial 0 COMPLETE, 1 PRUNED, 2 REJECTED; study 'empty': only a rejection."""
    monkeypatch.chdir(tmp_path)
    st = journal_study(tmp_path)
    add_trial(st, {"model.wide": 32, "optim.lr": 0.05})
    add_trial(st, {"model.wide": 48, "optim.lr": 0.05}, state="PRUNED", value=0.1)
    add_trial(st, {"model.wide": 72, "optim.lr": 0.05}, state="REJECTED")
    add_trial(journal_study(tmp_path, "empty"), {"model.wide": 72, "optim.lr": 0.05}, state="REJECTED")
    return tmp_path
