"""SLURM for real: a single-node cluster (munged, slurmctld, slurmd on loopback, 2 CPUs as 2 slots)
runs examples/slurm/sweep.sbatch as an array of sweepers on one PostgreSQL study and one MLflow
server, runs a sweep whose trials are SLURM jobs (``+launcher=slurm``), and loses an array task
to ``scancel`` mid-trial. Each test prints its figures: trials lost, duplicated, left RUNNING."""

import json
import os
import sys
import time
from pathlib import Path

import pytest
from helpers import FIXED, TINY, trial_mid_training
from slurm_cluster import Cluster, installed

pytestmark = pytest.mark.servers

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "slurm" / "sweep.sbatch"
N_TRIALS = 4
# what a 2-CPU test cluster can hold: the script's defaults are a GPU node's
SMALL_NODE = ["--cpus-per-task=1", "--mem=1", "--time=20"]


def overrides(study: str, epochs: int) -> list[str]:
    return ["sweep=smoke", *TINY, *FIXED, f"hydra.sweeper.study_name={study}", f"hydra.sweeper.n_trials={N_TRIALS}",
            f"trainer.epochs={epochs}", "hydra.sweeper.pruner={name:none}", "hydra.sweeper.heartbeat_interval=2",
            "hydra.sweeper.grace_period=12", "tracking.log_checkpoint=false"]


@pytest.fixture(scope="module")
def cluster():
    if not installed():
        if os.environ.get("ARCHSEARCH_REQUIRE_SLURM") == "1":
            pytest.fail("SLURM is required here but not installed (apt-get install slurm-wlm munge)")
        pytest.skip("SLURM is not installed (apt-get install slurm-wlm munge; .ci/run does)")
    c = Cluster(cpus=2)
    c.start()
    try:
        yield c
    finally:
        c.stop()


def env_for(servers) -> dict[str, str]:
    postgres, mlflow_server = servers
    return {"ARCHSEARCH_DB": postgres.url, "ARCHSEARCH_MLFLOW": mlflow_server.url, "ARCHSEARCH_PYTHON": sys.executable,
            "OMP_NUM_THREADS": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


def submit_array(cluster, servers, tmp_path: Path, study: str, epochs: int) -> str:
    return cluster.sbatch("--array=0-1", *SMALL_NODE, str(SCRIPT), *overrides(study, epochs), cwd=tmp_path,
                          env=env_for(servers))


def task_logs(tmp_path: Path) -> str:
    return "".join(f"--- {p.name}\n{p.read_text()[-2000:]}\n" for p in sorted(tmp_path.glob("slurm-*.out")))


def figures(servers, study: str) -> dict:
    """Trials lost, duplicated and left RUNNING, in Optuna and in MLflow."""
    import optuna
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    postgres, mlflow_server = servers
    trials = optuna.load_study(study_name=study, storage=postgres.url).get_trials(deepcopy=False)
    state = {t.number: t.user_attrs.get("state", t.state.name) for t in trials}
    trained = [t for t in trials if state[t.number] in ("COMPLETE", "PRUNED", "FAIL")]
    interrupted = [t for t in trials if state[t.number] == "INTERRUPTED"]
    retried = {t.user_attrs.get("retry_of") for t in trained}
    keys = [json.dumps(t.params, sort_keys=True) for t in trained]
    client = MlflowClient(mlflow_server.url)
    exp = client.get_experiment_by_name("archsearch")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.study = '{study}'", max_results=1000)
    return {"trials": state, "trained": len(trained), "interrupted": len(interrupted),
            "lost": max(0, N_TRIALS - len(trained)) + sum(t.number not in retried for t in interrupted),
            "duplicated": len(keys) - len(set(keys)), "running_optuna": sum(t.state == TrialState.RUNNING for t in trials),
            "running_mlflow": sum(r.info.status == "RUNNING" for r in runs), "mlflow_runs": len(runs),
            "workers": {t.user_attrs.get("worker") for t in trials}}


def report(name: str, f: dict, seconds: float) -> None:
    print(f"\nSLURM {name}: trials lost {f['lost']}, duplicated {f['duplicated']}, left RUNNING "
          f"{f['running_optuna']} (Optuna) / {f['running_mlflow']} (MLflow); trained {f['trained']}, interrupted "
          f"{f['interrupted']}, MLflow runs {f['mlflow_runs']}, workers {len(f['workers'])}; {seconds:.0f} s; "
          f"states {f['trials']}")


def clean(f: dict) -> tuple[int, int, int, int]:
    return f["lost"], f["duplicated"], f["running_optuna"], f["running_mlflow"]


def test_an_sbatch_array_of_two_sweepers_shares_one_study(cluster, servers, tmp_path):
    t0 = time.time()
    job = submit_array(cluster, servers, tmp_path, "slurm_array", epochs=2)
    assert cluster.wait(job, timeout=600), task_logs(tmp_path)
    f = figures(servers, "slurm_array")
    report("sbatch --array=0-1", f, time.time() - t0)
    assert set(f["trials"].values()) <= {"COMPLETE", "PRUNED", "REJECTED"}, task_logs(tmp_path)
    assert f["trained"] >= N_TRIALS and clean(f) == (0, 0, 0, 0)
    assert len(f["workers"] - {None}) == 2, "both array tasks worked the study"
    assert len(list(tmp_path.glob("slurm-*_[01].out"))) == 2


def test_the_submitit_launcher_runs_each_trial_as_a_slurm_job(cluster, servers, tmp_path):
    import subprocess

    postgres, mlflow_server = servers
    t0 = time.time()
    cmd = [sys.executable, "-m", "archsearch.train", "-m", *overrides("slurm_launcher", epochs=1), "+launcher=slurm",
           "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage='{postgres.url}'", f"tracking.uri='{mlflow_server.url}'",
           "hydra.launcher.partition=debug", "hydra.launcher.gpus_per_node=null", "hydra.launcher.cpus_per_task=1",
           "hydra.launcher.mem_gb=null", "hydra.launcher.timeout_min=10", "hydra.sweep.dir=multirun/launcher"]
    r = subprocess.run(cmd, cwd=tmp_path, env={**cluster.env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    jobs = list((tmp_path / "multirun" / "launcher" / ".submitit").glob("*/*_submitted.pkl"))
    trials = optuna_states(postgres.url, "slurm_launcher")
    print(f"\nSLURM +launcher=slurm: {len(jobs)} SLURM jobs for trials {trials}; {time.time() - t0:.0f} s")
    assert sum(s in ("COMPLETE", "PRUNED") for s in trials.values()) >= 2
    assert len(jobs) >= 2, "each trained trial was a SLURM job"


def optuna_states(url: str, study: str) -> dict[int, str]:
    import optuna

    trials = optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)
    return {t.number: t.user_attrs.get("state", t.state.name) for t in trials}


def test_scancel_of_an_array_task_mid_trial_loses_nothing(cluster, servers, tmp_path):
    t0 = time.time()
    job = submit_array(cluster, servers, tmp_path, "slurm_scancel", epochs=6)
    victim = trial_mid_training(servers[0].url, "slurm_scancel")
    task = next(p.parent.name for p in (tmp_path / "multirun" / job).glob(f"*/{victim.number}"))
    cluster.run("scancel", f"{job}_{task}")
    assert cluster.wait(job, timeout=600), task_logs(tmp_path)
    f = figures(servers, "slurm_scancel")
    report(f"scancel of array task {task} mid-trial", f, time.time() - t0)
    assert f["trials"][victim.number] == "INTERRUPTED", task_logs(tmp_path)
    assert clean(f) == (0, 0, 0, 0), task_logs(tmp_path)
    assert f["trained"] >= N_TRIALS
