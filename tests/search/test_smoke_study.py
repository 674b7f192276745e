"""The smoke study end to end, run once and read by several tests: one trial of each kind
(complete, rejected by the budget, failed, pruned), its MLflow parent and child runs, its report,
and the same study resumed."""

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from sweeping import once, states, study, sweep


def run_smoke_study(cwd: Path) -> SimpleNamespace:
    """The smoke sweep over four enqueued trials (one completes, one is over the budget, one's loss blows
    up, one is hopeless and pruned), what it left (the study, its MLflow runs, its report), then the same
    study resumed: what each step gave, read as the step ended."""
    import mlflow
    from mlflow.tracking import MlflowClient

    st = study(cwd)
    space = {"model.wide": 32, "model.dropout": 0.0}
    st.enqueue_trial({**space, "optim.lr": 0.05})                    # 0: trains, completes
    st.enqueue_trial({**space, "model.wide": 72, "optim.lr": 0.05})  # 1: over budget -> rejected
    st.enqueue_trial({**space, "optim.lr": 1e12})                    # 2: loss blows up -> FAIL
    st.enqueue_trial({**space, "optim.lr": 1e-7})                    # 3: hopeless -> pruned
    r = SimpleNamespace()
    r.sweep = sweep(cwd, "model.wide=choice(32,48,72)", "optim.lr=choice(0.05,1e12,1e-7)",
                    "hydra.sweeper.n_trials=5", "trainer.epochs=3",
                    "hydra.sweeper.pruner={name:median,n_startup_trials:1,n_warmup_steps:0}", probe=True)
    st = study(cwd)
    r.states, r.trials, r.metric_names = states(st), st.trials, st.metric_names
    r.dashboard = dashboard_trials(cwd / "mlruns" / "optuna" / "smoke.journal")
    r.best = st.best_trial.number if any(t.state.name == "COMPLETE" for t in r.trials) else None
    r.jobs = {int(d.name) for d in (cwd / "multirun" / "s").iterdir() if d.is_dir()}
    mlflow.set_tracking_uri(f"sqlite:///{cwd}/mlruns/mlflow.db")
    r.runs = mlflow.search_runs(experiment_names=["archsearch"])
    r.artifacts = {rid: {a.path for a in MlflowClient().list_artifacts(rid)} for rid in r.runs.run_id}
    # the report reads the same study back
    r.report = subprocess.run([sys.executable, "-m", "archsearch.report", "sweep=smoke"], cwd=cwd,
                              capture_output=True, text=True, timeout=120)
    r.report_plot = (cwd / "outputs" / "reports" / "smoke" / "pareto.png").exists()
    # the same command again continues the study to n_trials, then one more; then another space
    same_space = ["model.wide=choice(32,48,72)", "optim.lr=choice(0.05,1e12,1e-7)"]
    r.again = sweep(cwd, *same_space, "hydra.sweeper.n_trials=5", "trainer.epochs=1", sweep_dir="multirun/s2",
                    check=False)
    r.again_jobs = (cwd / "multirun" / "s2").exists() and any((cwd / "multirun" / "s2").glob("[0-9]*"))
    r.one_more = sweep(cwd, *same_space, "hydra.sweeper.n_trials=6", "trainer.epochs=1", sweep_dir="multirun/s3",
                       check=False)
    r.after = {t.number: t.datetime_complete for t in study(cwd).trials}
    r.states_after = states(study(cwd))
    r.other_space = sweep(cwd, "model.wide=choice(32,48,72)", "optim.lr=choice(0.5,0.6)", "hydra.sweeper.n_trials=9",
                          sweep_dir="multirun/s4", check=False)
    r.states_other_space = states(study(cwd))
    return r


def dashboard_trials(journal: Path) -> dict[int, dict]:
    """{trial number: the trial as optuna-dashboard's API serves it} for the study in ``journal``."""
    import json
    import socket
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    exe = Path(sys.executable).with_name("optuna-dashboard")
    proc = subprocess.Popen([str(exe), str(journal), "--host", "127.0.0.1", "--port", str(port), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/0", timeout=5) as resp:
                    return {t["number"]: t for t in json.loads(resp.read())["trials"]}
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> SimpleNamespace:
    """:func:`run_smoke_study`, once for the tests below."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARCHSEARCH_PROBE_BUSY", "1")  # cache the probe even beside other tests' processes
        return once(tmp_path_factory, "smoke_study", run_smoke_study)[1]


def test_smoke_sweep_rejects_fails_and_prunes(smoke):
    r = smoke
    s = r.states
    assert s[0] == "COMPLETE" and s[1] == "REJECTED" and s[2] == "FAIL" and s[3] == "PRUNED"
    trained = [n for n, v in s.items() if v in ("COMPLETE", "PRUNED", "FAIL")]
    assert len(trained) == 5  # rejections do not count towards n_trials
    t3 = r.trials[3]
    assert len(t3.intermediate_values) < 3  # stopped before its last epoch
    n_rej = sum(v == "REJECTED" for v in s.values())
    assert "study smoke: 5 trained" in r.sweep.stderr and f"{n_rej} rejected before launch" in r.sweep.stderr


def test_a_rejected_candidate_launches_nothing_and_is_no_result(smoke):
    from optuna.trial import TrialState

    r = smoke
    # the rejected candidate launched no job: no job directory, no metrics, no reported epoch
    assert 1 not in r.jobs and {0, 2, 3} <= r.jobs
    t1 = r.trials[1]
    assert not t1.intermediate_values and t1.constraints["budget"] > 0
    # optuna-dashboard reads the system attribute "constraints": the rejection is infeasible there too
    assert t1.system_attrs["constraints"] == [t1.constraints["budget"]]
    assert r.trials[0].system_attrs["constraints"] == [0.0]
    assert r.dashboard[1]["constraints"] == [t1.constraints["budget"]] and r.dashboard[0]["constraints"] == [0.0]
    # Optuna's own views (best trial, importance, dashboards) never read a rejection as a result of 0
    assert t1.state == TrialState.PRUNED and t1.value is None
    assert r.best is not None and r.states[r.best] == "COMPLETE" and r.metric_names == ["val_acc"]
    assert "params 165,624 exceed max_params 100,000" in t1.user_attrs["reasons"][0]


def test_smoke_sweep_logs_a_parent_run_and_a_child_per_trial(smoke):
    r = smoke
    s, runs = r.states, r.runs
    parents = runs[runs["tags.archsearch.role"] == "parent"]
    assert len(parents) == 1 and parents["tags.archsearch.study"].iloc[0] == "smoke"
    pid = parents.run_id.iloc[0]
    children = runs[runs["tags.mlflow.parentRunId"] == pid]
    assert len(children) == len(s)  # every trial, rejected ones included
    by_trial = {int(c["tags.trial_number"]): c for _, c in children.iterrows()}
    assert by_trial[0]["tags.state"] == "COMPLETE" and by_trial[0].status == "FINISHED"
    assert by_trial[1]["tags.state"] == "REJECTED" and by_trial[1]["params.model.params"] == "165624"
    assert "exceed max_params" in by_trial[1]["tags.reasons"]
    assert by_trial[2]["tags.state"] == "FAIL" and by_trial[2].status == "FAILED"
    assert by_trial[3]["tags.state"] == "PRUNED"
    # the runs table at a glance: names that tell trials apart and say how they did; the pruner and
    # the budget doing their job are not drawn as crashes (KILLED); the compared figures as metrics
    val0 = r.trials[0].value
    assert by_trial[0]["tags.mlflow.runName"] == f"t0 val {val0:.3f} {r.trials[0].user_attrs['model.params'] / 1000:.0f}k"
    assert by_trial[1]["tags.mlflow.runName"] == "t1 rejected" and by_trial[1].status == "FINISHED"
    assert by_trial[2]["tags.mlflow.runName"] == "t2 failed"
    epochs3 = len(r.trials[3].intermediate_values)
    assert by_trial[3]["tags.mlflow.runName"] == f"t3 pruned@{epochs3}" and by_trial[3].status == "FINISHED"
    assert by_trial[1]["metrics.params"] == 165624 and by_trial[1]["metrics.epochs"] == 0
    for n in (0, 3):
        assert {by_trial[n][f"metrics.{k}"] > 0 for k in ("val_acc", "params", "rf", "macs", "epochs")} == {True}
    assert by_trial[0]["metrics.test_acc"] >= 0 and by_trial[3]["metrics.epochs"] == epochs3
    assert by_trial[0]["params.model.wide"] == "32"
    assert parents["metrics.n_rejected"].iloc[0] == sum(v == "REJECTED" for v in s.values())
    assert parents["metrics.n_failed"].iloc[0] == sum(v == "FAIL" for v in s.values())
    assert {"leaderboard.csv", "pareto.png"} <= r.artifacts[pid]
    # trainer.amp=auto: the first trial of an architecture probes, later ones read the cache
    trained_runs = [by_trial[n] for n in sorted(by_trial) if by_trial[n]["tags.state"] != "REJECTED"]
    sources = [t["tags.precision.source"] for t in trained_runs]
    assert sources[0] == "probe" and "cache" in sources and all(t["tags.precision.why"] for t in trained_runs)


def test_the_report_reads_the_smoke_study_back(smoke):
    r = smoke
    assert r.report.returncode == 0, r.report.stderr
    assert "REJECTED" in r.report.stdout and "PRUNED" in r.report.stdout
    assert "epochs saved by pruning" in r.report.stdout
    assert r.report_plot


def test_the_same_command_resumes_the_study_to_n_trials(smoke):
    r = smoke
    # the same command again continues the study to n_trials: nothing left to run, finished trials kept
    first = {t.number: t.datetime_complete for t in r.trials}
    p = r.again
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "5/5 trained trials so far" in p.stdout + p.stderr
    assert not r.again_jobs
    assert r.one_more.returncode == 0, r.one_more.stdout[-3000:] + r.one_more.stderr[-3000:]
    assert sum(v in ("COMPLETE", "PRUNED", "FAIL") for v in r.states_after.values()) == 6
    assert all(r.after[n] == first[n] for n in first)  # completed trials never re-run


def test_the_smoke_study_over_another_space_is_one_line(smoke):
    r = smoke
    # the same study over another space: one line naming the parameter, exit 2, the study intact
    p = r.other_space
    assert p.returncode == 2 and p.stderr.strip().splitlines()[-1].startswith(
        "error: hydra.sweeper.params.optim.lr: study 'smoke' in journal:") and "Traceback" not in p.stderr
    assert sum(v in ("COMPLETE", "PRUNED", "FAIL") for v in r.states_other_space.values()) == 6
