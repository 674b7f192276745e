"""Real servers, real faults: sweeps with 3 workers on a PostgreSQL study, logging to a real
`mlflow server` (PostgreSQL backend store, local artifacts, 127.0.0.1), with a fault injected
mid-sweep. Each test prints its figures: trials lost, duplicated, left RUNNING (Optuna, MLflow)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import FIXED, TINY, trial_mid_training

pytestmark = pytest.mark.servers

N_TRIALS = 5
EPOCHS = 6  # the window a fault has to land in: from a trial's first epoch to the end of the sweep


def start_workers(cwd: Path, study: str, postgres_url: str, tracking_url: str, n: int = 3, grace: int = 12):
    cmd = [sys.executable, "-m", "archsearch.train", "-m", "sweep=smoke", *TINY, *FIXED,
           f"hydra.sweeper.storage='{postgres_url}'", f"hydra.sweeper.study_name={study}",
           f"hydra.sweeper.n_trials={N_TRIALS}", f"trainer.epochs={EPOCHS}", "hydra.sweeper.pruner={name:none}",
           "model.wide=choice(32,48)", "hydra.sweeper.heartbeat_interval=2", f"hydra.sweeper.grace_period={grace}",
           f"tracking.uri='{tracking_url}'", "tracking.log_checkpoint=false"]
    # MLflow's client retries a refused connection with exponential backoff; factor 1 (1, 2, 4, 8, 16 s)
    # instead of its default 2 still spans the outage, and gets back to training about 30 s sooner
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
    procs = []
    for i in range(n):
        out = open(cwd / f"worker{i}.log", "w")
        procs.append(subprocess.Popen([*cmd, f"hydra.sweep.dir=multirun/{study}-{i}"], cwd=cwd, env=env, stdout=out,
                                      stderr=subprocess.STDOUT, start_new_session=True))
        out.close()
    return procs


def wait_all(procs, cwd: Path, timeout: float = 600) -> list[int]:
    end = time.time() + timeout
    codes = []
    for i, p in enumerate(procs):
        try:
            codes.append(p.wait(timeout=max(1, end - time.time())))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            pytest.fail(f"worker {i} hung; its log:\n" + (cwd / f"worker{i}.log").read_text()[-3000:])
    return codes


def figures(postgres_url: str, study: str, tracking_url: str) -> dict:
    """Trials lost, duplicated and left RUNNING, in Optuna and in MLflow."""
    import optuna
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    st = optuna.load_study(study_name=study, storage=postgres_url)
    trials = st.get_trials(deepcopy=False)
    state = {t.number: t.user_attrs.get("state", t.state.name) for t in trials}
    trained = [t for t in trials if state[t.number] in ("COMPLETE", "PRUNED", "FAIL")]
    interrupted = [t for t in trials if state[t.number] == "INTERRUPTED"]
    retried = {t.user_attrs.get("retry_of") for t in trained}
    keys = [json.dumps(t.params, sort_keys=True) for t in trained]
    client = MlflowClient(tracking_url)
    exp = client.get_experiment_by_name("archsearch")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.study = '{study}'", max_results=1000)
    return {
        "trained": len(trained), "complete": sum(state[t.number] == "COMPLETE" for t in trained),
        "interrupted": len(interrupted),
        "lost": max(0, N_TRIALS - len(trained)) + sum(t.number not in retried for t in interrupted),
        "duplicated": len(keys) - len(set(keys)),
        "running_optuna": sum(t.state == TrialState.RUNNING for t in trials),
        "running_mlflow": sum(r.info.status == "RUNNING" for r in runs),
        "mlflow_runs": len(runs), "trials": state,
        "metrics_complete": all(len(client.get_metric_history(t.user_attrs["mlflow_run_id"], "val_acc")) == EPOCHS
                                for t in trained if state[t.number] == "COMPLETE"),
    }


def report(name: str, f: dict) -> None:
    print(f"\nFAULT {name}: trials lost {f['lost']}, duplicated {f['duplicated']}, left RUNNING "
          f"{f['running_optuna']} (Optuna) / {f['running_mlflow']} (MLflow); trained {f['trained']} "
          f"({f['complete']} complete), interrupted {f['interrupted']}, MLflow runs {f['mlflow_runs']}")


def test_a_worker_sigkilled_mid_trial_is_retried_through_the_heartbeat(servers, tmp_path):
    postgres, mlflow_server = servers
    procs = start_workers(tmp_path, "fault_kill", postgres.url, mlflow_server.url)
    victim = trial_mid_training(postgres.url, "fault_kill", procs)
    pid = int(victim.user_attrs["worker"].rpartition(":")[2])
    killed = next(p for p in procs if p.pid == pid)
    os.killpg(killed.pid, signal.SIGKILL)
    codes = wait_all(procs, tmp_path)
    assert [c for p, c in zip(procs, codes) if p is not killed] == [0, 0]
    f = figures(postgres.url, "fault_kill", mlflow_server.url)
    report("worker SIGKILLed mid-trial", f)
    assert f["trials"][victim.number] == "INTERRUPTED"
    assert (f["lost"], f["duplicated"], f["running_optuna"], f["running_mlflow"]) == (0, 0, 0, 0)
    assert f["trained"] >= N_TRIALS and f["metrics_complete"]


def sweep_through(servers, tmp_path, study: str, what: str, fault) -> dict:
    """3 workers; ``fault()`` once a trial has trained an epoch; every worker must end cleanly."""
    postgres, mlflow_server = servers
    procs = start_workers(tmp_path, study, postgres.url, mlflow_server.url)
    trial_mid_training(postgres.url, study, procs)
    fault()
    codes = wait_all(procs, tmp_path)
    logs = "".join((tmp_path / f"worker{i}.log").read_text()[-1500:] for i in range(3))
    assert codes == [0, 0, 0], logs
    f = figures(postgres.url, study, mlflow_server.url)
    report(what, f)
    assert (f["lost"], f["duplicated"], f["running_optuna"], f["running_mlflow"]) == (0, 0, 0, 0)
    assert f["trained"] >= N_TRIALS and f["metrics_complete"]  # training went on, its metrics arrived
    return f


def test_postgresql_restarted_mid_sweep(servers, tmp_path):
    sweep_through(servers, tmp_path, "fault_pg", "PostgreSQL restarted mid-sweep", servers[0].restart)


def test_mlflow_server_down_for_10_s_mid_trial(servers, tmp_path):
    mlflow_server = servers[1]

    def outage():
        mlflow_server.stop()
        time.sleep(10)
        mlflow_server.start()

    sweep_through(servers, tmp_path, "fault_mlflow", "MLflow server down 10 s mid-trial", outage)
