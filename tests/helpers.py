"""What several test modules share: the small synthetic runs and their settings (tests/ is on
sys.path through its conftest.py, so a test module imports these as ``from helpers import ...``)."""

import time

import pytest

from archsearch.config.compose import compose

FAST = ["data=synthetic", "data.n_train=800", "data.n_test=200", "data.val_size=128", "trainer.batch_size=32", "optim.lr=0.05",
        "trainer.progress=false", "trainer.workers=0"]


# dilated_sep's layers at a fraction of the width: what a test needs of the model, in a fraction of the time
TINY_MODEL = ["model.wide=16", "model.narrow=8"]


def cfg_for(tmp_path, *extra):
    return compose("config", [*FAST, f"tracking.uri=sqlite:///{tmp_path}/mlruns/mlflow.db", *extra])


def runs(tmp_path):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    return mlflow.search_runs(experiment_names=["archsearch"])


TINY = ["data.n_train=384", "data.n_test=64", "data.val_size=96", "hydra.sweeper.sampler.n_startup_trials=100",
        # dilated_sep at a quarter of its width (wide 32: 39,224 params; wide 72: 165,624, over this budget)
        "model.narrow=8", "budget.max_params=100000",
        # what these tests do not look at, and what each trial would pay for it (tests/test_ui.py checks both)
        "trainer.tta=none", "tracking.log_model=false"]


# the precision probe is exercised by the smoke test; elsewhere a fixed setting saves its seconds
FIXED = ["trainer.amp=off", "trainer.channels_last=true"]


def trial_mid_training(url: str, study: str, procs=(), timeout: float = 300):
    """-> the RUNNING trial (FrozenTrial) of ``study`` in the RDB storage ``url`` that has reported at
    least one epoch; fails when none shows up within ``timeout`` s, or when every process of ``procs``
    (the workers, if given) has ended.

    One storage for the whole wait: a fresh ``load_study`` per poll costs an engine, a
    connection and a schema check, which on a loaded machine outlasted a whole trial."""
    import optuna
    from optuna.trial import TrialState

    end = time.time() + timeout
    storage = study_id = None
    try:
        while time.time() < end and (not procs or any(p.poll() is None for p in procs)):
            if study_id is None:  # the workers create the schema and the study; until then, wait
                try:
                    storage = storage or optuna.storages.RDBStorage(url)
                    study_id = storage.get_study_id_from_name(study)
                except Exception:
                    time.sleep(0.2)
                continue
            running = [t for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
                       if t.intermediate_values]
            if running:
                return running[0]
            time.sleep(0.05)
    finally:
        if storage is not None:
            storage.engine.dispose()
    pytest.fail("no trial was seen running")
