"""What several test modules share: the small synthetic runs and their settings (tests/ is on
sys.path through its conftest.py, so a test module imports these as ``from helpers import ...``)."""

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
