"""The Optuna sweeper end to end: real Hydra multiruns in subprocesses, synthetic data,
journal storage and MLflow (SQLite) in a temp dir."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import FIXED, TINY
from sweeping import a_running_trial, states, study, sweep


def test_a_bad_sweep_setting_is_one_line(tmp_path):
    p = sweep(tmp_path, "hydra.sweeper.direction=sideways", check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1] == ("error: hydra.sweeper.direction: unknown direction 'sideways'; "
                                                 "choose one of maximize, minimize")


def test_sigkill_mid_trial_resumes_keeping_completed(tmp_path):
    from optuna.trial import TrialState

    proc = sweep(tmp_path, "hydra.sweeper.n_trials=2", "trainer.epochs=4", "hydra.sweeper.pruner={name:none}",
                 background=True)
    deadline = time.time() + 240
    killed_trial = None
    while time.time() < deadline:
        time.sleep(0.5)
        try:
            ts = study(tmp_path).trials
        except Exception:
            continue
        done = [t for t in ts if t.state == TrialState.COMPLETE and t.user_attrs.get("state") == "COMPLETE"]
        running = [t for t in ts if t.state == TrialState.RUNNING and t.intermediate_values]
        if done and running:
            killed_trial = running[0].number
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=30)
    assert killed_trial is not None, "never saw a completed and a running trial"
    completed_before = {t.number for t in study(tmp_path).trials if t.user_attrs.get("state") == "COMPLETE"}

    sweep(tmp_path, "hydra.sweeper.n_trials=2", "trainer.epochs=4", "hydra.sweeper.pruner={name:none}",
          sweep_dir="multirun/s2")
    st = study(tmp_path)
    s = states(st)
    assert s[killed_trial] == "INTERRUPTED"
    retry = [t for t in st.trials if t.user_attrs.get("retry_of") == killed_trial]
    assert len(retry) == 1 and retry[0].params == st.trials[killed_trial].params
    assert completed_before <= {n for n, v in s.items() if v == "COMPLETE"}
    assert sum(v in ("COMPLETE", "PRUNED", "FAIL") for v in s.values()) == 2


def test_sigterm_mid_trial_marks_it_interrupted_at_once(tmp_path):
    """A sweep stopped with SIGTERM (kill, a scheduler's pre-emption) while a trial runs in its own
    process: exit 143, the trial INTERRUPTED and re-queued at once (not left RUNNING until a next
    sweep recovers it), its MLflow run KILLED."""
    import mlflow
    from optuna.trial import TrialState

    proc = sweep(tmp_path, "hydra.sweeper.n_trials=1", "trainer.epochs=20", "hydra.sweeper.pruner={name:none}",
                 background=True)
    victim = a_running_trial(tmp_path, proc, timeout=240)
    if victim is not None:
        proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert victim is not None, "never saw a running trial: " + out[-2000:]
    assert proc.returncode == 143, out[-2000:]
    st = study(tmp_path)
    assert states(st)[victim] == "INTERRUPTED" and not [t for t in st.trials if t.state == TrialState.RUNNING]
    assert "the sweep was stopped during the trial" in st.trials[victim].user_attrs["error"]
    retry = [t for t in st.trials if t.user_attrs.get("retry_of") == victim]
    assert len(retry) == 1 and retry[0].state == TrialState.WAITING
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    run = mlflow.get_run(st.trials[victim].user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED"
    parent = mlflow.get_run(st.user_attrs["mlflow_parent_run_id"])  # the study's run: not left RUNNING
    assert parent.info.status == "KILLED" and parent.data.tags["summary"].startswith("stopped: 0 trained")

    sweep(tmp_path, "hydra.sweeper.n_trials=1", "trainer.epochs=1", sweep_dir="multirun/s2")  # resumed
    st = study(tmp_path)
    assert st.user_attrs["mlflow_parent_run_id"] == parent.info.run_id  # the same run, reopened and closed
    resumed = mlflow.get_run(parent.info.run_id)
    assert resumed.info.status == "FINISHED" and "error" not in resumed.data.tags


def test_two_workers_share_one_study(tmp_path):
    study(tmp_path)  # create the journal up front
    args = ["hydra.sweeper.n_trials=4", "trainer.epochs=1", "model.wide=choice(32,48)"]
    a = sweep(tmp_path, *args, sweep_dir="multirun/a", background=True)
    b = sweep(tmp_path, *args, sweep_dir="multirun/b", background=True)
    out_a, _ = a.communicate(timeout=600)
    out_b, _ = b.communicate(timeout=600)
    assert a.returncode == 0 and b.returncode == 0, out_a[-2000:] + out_b[-2000:]
    st = study(tmp_path)
    trained = [t for t in st.trials if t.user_attrs.get("state") in ("COMPLETE", "PRUNED", "FAIL")]
    assert 4 <= len(trained) <= 5  # a race at the very end may add one
    jobs_a = {d.name for d in (tmp_path / "multirun" / "a").iterdir() if d.name.isdigit()}
    jobs_b = {d.name for d in (tmp_path / "multirun" / "b").iterdir() if d.name.isdigit()}
    assert jobs_a and jobs_b and not (jobs_a & jobs_b)  # both worked, no trial ran twice
    workers = {t.user_attrs["worker"] for t in trained}
    assert len(workers) == 2


def test_plain_multirun_groups_jobs_under_one_parent(tmp_path):
    import mlflow

    cmd = [sys.executable, "-m", "archsearch.train", "-m", "data=synthetic", *TINY[:3], "trainer.epochs=1",
           "trainer.progress=false", "trainer.workers=0", *FIXED, "model=dilated_sep,too_wide",
           "hydra.sweep.dir=multirun/p"]
    p = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-3000:]
    assert "REJECTED too_wide" in p.stderr
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["archsearch"])
    parent = runs[runs["tags.archsearch.role"] == "parent"]
    assert len(parent) == 1
    kids = runs[runs["tags.mlflow.parentRunId"] == parent.run_id.iloc[0]]
    assert set(kids["tags.state"]) == {"COMPLETE", "REJECTED"}


def test_two_workers_on_postgresql(tmp_path, postgres_url):
    """Many machines share a study through an RDB storage: a real PostgreSQL server here."""
    import optuna

    storage = f"hydra.sweeper.storage='{postgres_url}'"
    args = [storage, "hydra.sweeper.n_trials=4", "trainer.epochs=1", "model.wide=choice(32,48)"]
    a = sweep(tmp_path, *args, sweep_dir="multirun/a", background=True)
    b = sweep(tmp_path, *args, sweep_dir="multirun/b", background=True)
    out_a, _ = a.communicate(timeout=600)
    out_b, _ = b.communicate(timeout=600)
    assert a.returncode == 0 and b.returncode == 0, out_a[-2000:] + out_b[-2000:]
    st = optuna.load_study(study_name="smoke", storage=postgres_url)
    trained = [t for t in st.trials if t.user_attrs.get("state") in ("COMPLETE", "PRUNED", "FAIL")]
    assert 4 <= len(trained) <= 5
    assert len({t.user_attrs["worker"] for t in trained}) == 2
    assert all(len(t.intermediate_values) == 1 for t in trained if t.user_attrs["state"] == "COMPLETE")
    jobs_a = {d.name for d in (tmp_path / "multirun" / "a").iterdir() if d.name.isdigit()}
    jobs_b = {d.name for d in (tmp_path / "multirun" / "b").iterdir() if d.name.isdigit()}
    assert not (jobs_a & jobs_b)


def test_only_rejections_stops_with_a_message(tmp_path):
    p = sweep(tmp_path, "model.wide=choice(72,80)", "hydra.sweeper.max_rejections_in_a_row=3",
              "hydra.sweeper.n_trials=4")
    s = states(study(tmp_path))
    assert list(s.values()) == ["REJECTED"] * 3
    assert "3 candidates in a row were rejected by the budget" in p.stderr
    assert not (tmp_path / "multirun" / "s").exists() or not any((tmp_path / "multirun" / "s").glob("[0-9]*"))


def test_multi_objective_gives_a_pareto_front_without_pruning(tmp_path):
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    p = sweep(tmp_path, "hydra.sweeper.direction=[maximize,minimize]", "hydra.sweeper.objectives=[val_acc,params]",
              "hydra.sweeper.n_trials=2", "trainer.epochs=1", "model.wide=choice(32,48)")
    assert "multi-objective study: Optuna cannot prune it, so pruning is off" in p.stdout + p.stderr
    path = tmp_path / "mlruns" / "optuna" / "smoke.journal"
    st = optuna.load_study(study_name="smoke", storage=JournalStorage(JournalFileBackend(str(path))))
    assert [d.name for d in st.directions] == ["MAXIMIZE", "MINIMIZE"]
    done = [t for t in st.trials if t.user_attrs.get("state") == "COMPLETE"]
    assert len(done) == 2 and all(t.values[1] == t.user_attrs["model.params"] for t in done)
    assert st.best_trials  # the Pareto front


def test_plan_slots_divides_devices_and_cores():
    from archsearch.search.pool import plan_slots

    cpu = plan_slots(2, "auto", 1, cores=[0, 1], gpus=[])
    assert [(s.gpu, s.cores) for s in cpu] == [(None, (0,)), (None, (1,))]  # one core each, no oversubscription
    assert cpu[0].env()["OMP_NUM_THREADS"] == "1" and "CUDA_VISIBLE_DEVICES" not in cpu[0].env()
    gpu = plan_slots(None, "auto", 2, cores=list(range(8)), gpus=[0, 1])  # null: every slot of every GPU
    assert [s.gpu for s in gpu] == [0, 0, 1, 1] and gpu[2].env()["CUDA_VISIBLE_DEVICES"] == "1"
    assert len(plan_slots(None, "auto", 1, cores=[0, 1], gpus=[])) == 1
    with pytest.raises(ValueError, match=r"hydra.sweeper.n_jobs: 3 concurrent trials need 3 slots, but devices \[0\]"):
        plan_slots(3, [0], 1, cores=[0, 1])
    with pytest.raises(ValueError, match="hydra.sweeper.devices: expected auto, cpu or a list"):
        plan_slots(2, "gpus", 1, cores=[0, 1])


def _kill_trial_process(job: str) -> None:
    for pid in os.listdir("/proc"):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if b"archsearch.search.trial_process" in cmd and any(a.decode().endswith(job) for a in cmd):
            os.kill(int(pid), signal.SIGKILL)


def test_n_jobs_two_trials_at_a_time_and_a_killed_one_is_retried(tmp_path):
    """n_jobs=2 on 2 cores: trials in processes of their own, one core each, overlapping in time;
    rejection before launch, pruning through the storage and MLflow parent/child runs as with one;
    a trial process killed under the sweeper (OOM, SIGKILL) is INTERRUPTED and retried once, and the
    sweep goes on to n_trials."""
    import mlflow
    from optuna.trial import TrialState

    st = study(tmp_path)
    st.enqueue_trial({"model.wide": 72, "model.dropout": 0.0, "optim.lr": 0.05})  # over budget: rejected
    proc = sweep(tmp_path, "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=4", "trainer.epochs=3",
                 "hydra.sweeper.pruner={name:none}", "model.wide=choice(32,48,72)", background=True)
    victim = a_running_trial(tmp_path, proc, timeout=300, poll=0.3)
    if victim is not None:
        _kill_trial_process(f"multirun/s/{victim}")
    out, _ = proc.communicate(timeout=600)
    assert victim is not None and proc.returncode == 0, out[-3000:]
    assert "2 trials at a time" in out
    st = study(tmp_path)
    s = states(st)
    assert s[0] == "REJECTED" and not (tmp_path / "multirun" / "s" / "0").exists()
    assert s[victim] == "INTERRUPTED" and "killed by signal 9" in st.trials[victim].user_attrs["error"]
    retry = [t for t in st.trials if t.user_attrs.get("retry_of") == victim]
    assert len(retry) == 1 and retry[0].params == st.trials[victim].params
    assert sum(v in ("COMPLETE", "PRUNED", "FAIL") for v in s.values()) == 4
    assert not [t for t in st.trials if t.state == TrialState.RUNNING]
    trained = [t for t in st.trials if t.user_attrs.get("state") in ("COMPLETE", "PRUNED")]
    assert {t.user_attrs["slot"].split(" (")[0] for t in trained} == {"slot 0", "slot 1"}
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trained)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:]))  # two trials ran at the same time
    for t in trained:  # each job folder as Hydra keeps it, plus what the trial process returned
        job = tmp_path / "multirun" / "s" / str(t.number)
        assert (job / ".hydra" / "config.yaml").exists() and (job / "result.json").exists()
        assert len(t.intermediate_values) == 3  # reported from the trial's own process
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["archsearch"])
    parent = runs[runs["tags.archsearch.role"] == "parent"].run_id.iloc[0]
    kids = runs[runs["tags.mlflow.parentRunId"] == parent]
    assert len(kids) == len(s) and not (kids.status == "RUNNING").any()
    assert set(kids[kids["tags.trial_number"] == str(victim)].status) == {"KILLED"}


def test_a_retry_does_not_shift_the_draws_after_it():
    """The sweeper's draw for each new trial (ask, the sampler seeded at the trial's draw index,
    suggest): a study whose trial 1 was stopped and re-queued draws the same candidates, in the
    same order, as one that ran through (a second study of the same seed, e.g. under another
    proxy, stays aligned with the first)."""
    import optuna

    from archsearch.search.samplers import make_sampler
    from archsearch.search.space import parse_space, suggest
    from archsearch.search.study import draw_index

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space, _ = parse_space({"model.wide": "choice(32,48,72)", "model.narrow": "choice(8,16,32)",
                            "optim.lr": "tag(log, interval(0.01, 0.3))"})

    def draw(st):
        t = st.ask()
        st.sampler = make_sampler({"name": "random", "seed": 0}, space, draw=draw_index(st, t.number))
        return t, {k: suggest(t, dim) for k, dim in space.items()}

    clean = optuna.create_study()
    expected = []
    for _ in range(5):
        t, values = draw(clean)
        clean.tell(t, 0.5)
        expected.append(values)
    stopped = optuna.create_study()
    got = []
    for i in range(6):
        t, values = draw(stopped)
        if i == 1:  # stopped mid-trial: failed, its parameters re-queued (trial 2 runs them again)
            stopped.tell(t, state=optuna.trial.TrialState.FAIL)
            stopped.enqueue_trial(values, user_attrs={"retry_of": t.number})
            continue
        stopped.tell(t, 0.5)
        got.append(values)
    assert got == expected


def test_split_sweep_args_reads_the_command_line_with_hydras_parser():
    """The sweeper's command line: Hydra's override parser tells the search dimensions from the plain
    overrides; a comma list is a choice, lists and dicts stay values, a + prefix stays."""
    from archsearch.search.study import split_sweep_args

    plain, space = split_sweep_args([
        "model.wide=choice(32,48,72)", "model.narrow=8,16", "optim.lr=tag(log, interval(0.01, 0.1))",
        "+model.extra=range(1,4)", "hydra.sweeper.direction=[maximize,minimize]", "trainer.epochs=3",
        "hydra.sweeper.pruner={name:median,n_startup_trials:1,n_warmup_steps:0}", "hydra.sweep.dir=multirun/s",
        "hydra.sweeper.storage='postgresql://u@127.0.0.1:5432/db'", "data.name='a,b'", "model.wide=choice(32,48"])
    assert space == {"model.wide": "choice(32,48,72)", "model.narrow": "choice(8,16)",
                     "optim.lr": "tag(log, interval(0.01, 0.1))", "+model.extra": "range(1,4)"}
    assert plain == ["hydra.sweeper.direction=[maximize,minimize]", "trainer.epochs=3",
                     "hydra.sweeper.pruner={name:median,n_startup_trials:1,n_warmup_steps:0}",
                     "hydra.sweep.dir=multirun/s", "hydra.sweeper.storage='postgresql://u@127.0.0.1:5432/db'",
                     "data.name='a,b'", "model.wide=choice(32,48"]  # Hydra reports what it cannot parse


def test_enqueued_trials_run_first_and_a_bad_one_is_one_line(tmp_path):
    sweep(tmp_path, "hydra.sweeper.n_trials=1", "hydra.sweeper.enqueue=[{model.wide:48,optim.lr:0.02}]")
    (t,) = study(tmp_path).trials
    assert t.params["model.wide"] == 48 and t.params["optim.lr"] == 0.02  # model.dropout was sampled
    p = sweep(tmp_path, "hydra.sweeper.study_name=other", "hydra.sweeper.enqueue=[{model.wide:40}]", check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1] == ("error: hydra.sweeper.enqueue[0].model.wide: 40 is not one of the "
                                                 "choices [32, 48, 72]")


def test_the_recipe_sweep_starts_from_the_shipped_recipe(tmp_path):
    """sweeps/recipe.yaml's first trial is the defaults, as the config composes them."""
    cmd = [sys.executable, "-m", "archsearch.train", "-m", "sweep=recipe", "data=synthetic", "data.n_train=256",
           "data.n_test=64", "data.val_size=64", "data.limit_train=null", "trainer.epochs=1", "hydra.sweeper.n_trials=1",
           *TINY[4:], *FIXED, "model.wide=16", "hydra.sweep.dir=multirun/r"]
    p = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    from archsearch.config.compose import compose

    cfg = compose("config", [])
    t = study(tmp_path, "recipe").trials[0]  # the second queued recipe waits for a later run
    assert t.params["optim.lr"] == cfg.optim.lr and t.params["trainer.batch_size"] == cfg.trainer.batch_size
    assert t.params["aug.cooldown_fraction"] == cfg.aug.cooldown_fraction
    assert t.params["trainer.label_smoothing"] == cfg.trainer.label_smoothing
    assert t.params["trainer.stem_init"] == cfg.trainer.stem_init and t.params["aug.mix.mixup_alpha"] == 0.0
