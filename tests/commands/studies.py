"""What the retrain, export and report tests share: their settings (dilated_sep at a quarter of
its width, 1-epoch trials), Optuna journal studies built directly (no training), the smoke sweep
in a subprocess, and the commands run in process (tests/commands is on sys.path as each test
module's folder, so they import these as ``from studies import ...``)."""

import importlib
import os
import subprocess
import sys
from pathlib import Path

TINY = ["data.n_train=384", "data.n_test=64", "data.val_size=96", "hydra.sweeper.sampler.n_startup_trials=100",
        "model.narrow=8", "budget.max_params=100000"]  # dilated_sep at a quarter of its width
FAST = ["trainer.epochs=1", "trainer.amp=off", "trainer.channels_last=true", "trainer.tta=flip",
        "trainer.progress=false", "trainer.workers=0"]


def journal_study(base, name="smoke"):
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = Path(base) / "mlruns" / "optuna" / f"{name}.journal"
    path.parent.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(path))),
                               direction="maximize", load_if_exists=True)


def add_trial(st, params, state="COMPLETE", value=0.5, **attrs):
    """A finished trial as the sweeper records it (REJECTED: told PRUNED, no epoch, budget constraint > 0)."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    def dist(k, v):
        return FloatDistribution(1e-3, 1.0, log=True) if k == "optim.lr" else CategoricalDistribution([v])

    pruned = state in ("PRUNED", "REJECTED")
    ostate = optuna.trial.TrialState.PRUNED if pruned else optuna.trial.TrialState.COMPLETE
    st.add_trial(optuna.trial.create_trial(
        state=ostate, value=None if pruned else value,
        params=params, distributions={k: dist(k, v) for k, v in params.items()},
        system_attrs={"constraints:budget": 1.0} if state == "REJECTED" else {},
        intermediate_values={1: value} if state != "REJECTED" else {}, user_attrs={"state": state, **attrs}))


def sweep_smoke(cwd, *overrides) -> subprocess.CompletedProcess:
    """``python -m archsearch.train -m sweep=smoke`` at TINY size with FAST trials and ``overrides``, in ``cwd``."""
    cmd = [sys.executable, "-m", "archsearch.train", "-m", "sweep=smoke", *TINY, *FAST, *overrides]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def run_main(module, capsys, *args):
    """``python -m archsearch.<module> args``, in process -> (exit code, stdout, stderr)."""
    code = importlib.import_module(f"archsearch.{module}").main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def retrain_runs(base):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{base}/mlruns/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["archsearch"])
    return runs[runs["tags.archsearch.kind"] == "retrain"] if "tags.archsearch.kind" in runs else runs[:0]
