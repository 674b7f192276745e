"""``python -m archsearch.retrain``: a sweep's best trials trained again with the full recipe, on a
real smoke sweep (a subprocess, synthetic data, quarter-width dilated_sep, 1-epoch trials) and on
studies built directly with Optuna; its user mistakes; a sweep scored without training."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from studies import FAST, TINY, journal_study, retrain_runs, run_main, sweep_smoke

from archsearch.search.selection import complete_trials, distinct_architectures


# ------------------------------------------------------------------ retrain + report on a real sweep
def test_retrain_top_trials_full_recipe_mlflow_and_study_records(swept, monkeypatch, capsys):
    monkeypatch.chdir(swept)
    st = journal_study(swept)
    assert st.user_attrs["archsearch.base_overrides"][:1] == ["sweep=smoke"]  # the sweeper recorded its command
    top = [t.number for t in complete_trials(st)[:3]]
    code, out, err = run_main("retrain", capsys, "sweep=smoke", "top=3", "distinct=false", *FAST)
    assert code == 0, err
    assert "not reapplied" in out and "data.n_train=384" in out  # training settings of the sweep command
    for n in top:
        assert f"t{n} s0: val_acc " in out
    st = journal_study(swept)
    parent = st.user_attrs["mlflow_parent_run_id"]
    runs = retrain_runs(swept)
    assert sorted(runs["tags.mlflow.runName"]) == sorted(f"smoke-t{n}-full-s0" for n in top)
    for _, r in runs.iterrows():
        n = int(r["tags.archsearch.trial"])
        rec = st.user_attrs[f"retrain.t{n}.s0"]
        assert r["tags.archsearch.study"] == "smoke" and r["tags.mlflow.parentRunId"] == parent
        assert rec["run_id"] == r.run_id and rec["epochs"] == 1 and r.status == "FINISHED"
        assert rec["test_acc_single_view"] == pytest.approx(r["metrics.test_acc_no_tta"])  # TTA on: single view apart
        assert rec["test_acc"] == pytest.approx(r["metrics.test_acc"])
        assert rec["params"] == st.trials[n].user_attrs["model.params"] and rec["rf"] == 61
        assert 0 < rec["seconds"] < 600 and rec["precision"].startswith("amp ")  # what the full retrain cost, in what
        ovs = rec["overrides"]
        assert ovs[0] == "sweep=smoke" and ovs[-1] == "seed=0" and "proxy=none" in ovs
        assert "model.narrow=8" in ovs and "data.n_train=384" not in ovs  # the architecture, not the proxy's data
        assert f"model.wide={st.trials[n].params['model.wide']}" in ovs
    assert "proxy vs full recipe" in out and "full_test_s0" in out
    assert out.rstrip().splitlines()[-1] == ("study smoke: 3 runs retrained, 0 failed, 0 already recorded; compare "
                                             "proxy and full: python -m archsearch.report sweep=smoke")

    # again: recorded runs are skipped, force/seeds add only what is asked
    code, out, _ = run_main("retrain", capsys, "sweep=smoke", "top=1", *FAST)
    assert code == 0 and f"t{top[0]} s0: already retrained" in out and len(retrain_runs(swept)) == 3
    code, out, err = run_main("retrain", capsys, "sweep=smoke", f"trials={top[0]}", "seeds=2", *FAST)
    assert code == 0, err
    rec = journal_study(swept).user_attrs[f"retrain.t{top[0]}.s1"]
    assert rec["overrides"][-1] == "seed=1" and len(retrain_runs(swept)) == 4

    # the report: proxy vs full over the 3 retrained trials, tau and rho, files
    code, out, err = run_main("report", capsys, "sweep=smoke")
    assert code == 0, err
    assert "proxy vs full recipe (3 retrained trials" in out and "full_test_s1" in out
    assert "proxy val_acc vs full-recipe val_acc (mean over seeds): Kendall tau-b" in out
    assert "proxy val_acc vs full-recipe single-view test_acc (mean over seeds): Kendall tau-b" in out
    rep = swept / "outputs" / "reports" / "smoke"
    summary = json.loads((rep / "summary.json").read_text())
    assert summary["rank"]["n_trials"] == 3 and "kendall_tau_b" in summary["rank"]["proxy_val_acc_vs_full_val_acc"]
    assert (rep / "full_vs_params.png").stat().st_size > 1000  # the retrained trials' accuracy against params
    csv = (rep / "proxy_vs_full.csv").read_text().splitlines()
    assert csv[0].startswith("trial,params,rf,macs,proxy_val_acc,full_val_acc,full_test_s0,full_test_s1") and len(csv) == 4
    assert all(row.split(",")[3].isdigit() for row in csv[1:])  # each trial's MACs, as the sweep recorded them
    # and when each retrained run reached 80/85/90% validation (one epoch of synthetic data: none did)
    assert "time to accuracy (retrained runs" in out
    assert [(r["trial"], r["seed"]) for r in summary["time_to_accuracy"]] == sorted([(n, 0) for n in top] + [(top[0], 1)])
    assert all(0 < r["minutes"] < 10 and r["epoch_to_val85"] is None for r in summary["time_to_accuracy"])
    assert len((rep / "time_to_accuracy.csv").read_text().splitlines()) == 5


# ------------------------------------------------------------------ which trials
def test_top_takes_the_best_trial_of_each_architecture():
    def t(n, wide, lr):
        return SimpleNamespace(number=n, params={"model.wide": wide, "optim.lr": lr})

    ranked = [t(29, 48, 0.05), t(51, 48, 0.04), t(7, 32, 0.05), t(3, 48, 0.09), t(9, 64, 0.01)]
    assert [x.number for x in distinct_architectures(ranked)] == [29, 7, 9]  # lr variants of 48 dropped
    # scored without training: same MACs, the same candidate as far as the score can tell
    scored = [SimpleNamespace(number=n, values=[m], params={"model.d": n}) for n, m in ((89, 88), (97, 88), (168, 86))]
    assert [x.number for x in distinct_architectures(scored, by_score=True)] == [89, 168]


# ------------------------------------------------------------------ user mistakes: one line, exit 2
RETRAIN_MISTAKES = [
    (["sweep=nope"], "error: sweep: no config 'nope'; available: arch_branch_100k, arch_branch_100k_timed, arch_dilated, arch_macs, arch_macs_100k, arch_residual, hparams, pareto, "
                     "proxy_rank, recipe, smoke"),
    (["sweep=hparams"], "error: sweep: no study 'hparams' in journal:"),
    (["sweep=smoke", "hydra.sweeper.study_name=empty"], "error: sweep: study 'empty' has no COMPLETE trial yet"),
    (["sweep=smoke", "top=0"], "error: top: must be a whole number >= 1; got '0'"),
    (["sweep=smoke", "seeds=two"], "error: seeds: must be a whole number >= 1; got 'two'"),
    (["sweep=smoke", "trials=7"], "error: trials: study 'smoke' has no trial 7; choose one of the COMPLETE trials 0"),
    (["sweep=smoke", "trials=1"], "error: trials: trial 1 of study 'smoke' is PRUNED, not COMPLETE; choose one of 0"),
    (["sweep=smoke", "trials=0,2"], "error: trials: trial 2 of study 'smoke' is REJECTED, not COMPLETE"),
    (["sweep=smoke", "trials=x"], "error: trials: expected trial numbers like trials=4,7; got 'x'"),
    (["sweep=smoke", "top=2", "trials=0"], "error: top: give either top=N"),
    (["sweep=smoke", "force=maybe"], "error: force: must be true or false; got 'maybe'"),
    (["trials=0"], "error: sweep: name a sweep (sweep=arch_dilated) or hydra.sweeper.study_name=NAME"),
]


@pytest.mark.parametrize("args,message", RETRAIN_MISTAKES, ids=[" ".join(a) for a, _ in RETRAIN_MISTAKES])
def test_retrain_mistakes_are_one_line(small_study, capsys, args, message):
    code, out, err = run_main("retrain", capsys, *args)
    assert code == 2 and err.startswith(message) and err.count("\n") == 1 and not out, err
    assert not (small_study / "outputs").exists() and not (small_study / "mlruns" / "optuna" / "hparams.journal").exists()


def test_cli_mistakes_exit_2_without_a_traceback(small_study):
    for module, args, message in (("retrain", ["sweep=smoke", "top=0"], "error: top: must be a whole number"),
                                  ("export", ["sweep=nope", "name=x"], "error: sweep: no config 'nope'")):
        p = subprocess.run([sys.executable, "-m", f"archsearch.{module}", *args], cwd=small_study,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 2 and p.stderr.startswith(message) and p.stderr.count("\n") == 1, p.stderr
        assert "Traceback" not in p.stderr


def test_sigterm_stops_a_retrain_as_killed_and_records_nothing(small_study):
    """kill (or a scheduler's pre-emption) mid-training: status 143, the MLflow run KILLED, no study record."""
    cmd = [sys.executable, "-m", "archsearch.retrain", "sweep=smoke", "trials=0", *TINY, *FAST, "trainer.epochs=50",
           "data.n_train=800"]
    p = subprocess.Popen(cmd, cwd=small_study, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    last = small_study / "outputs" / "retrain" / "smoke" / "t0-s0" / "last.pt"
    deadline = time.time() + 120
    while time.time() < deadline and not last.exists() and p.poll() is None:
        time.sleep(0.3)
    assert last.exists(), p.stderr.read() if p.poll() is not None else "no checkpoint within 120 s"
    p.send_signal(signal.SIGTERM)
    err = p.communicate(timeout=60)[1]
    assert p.returncode == 143 and "Traceback" not in err, err
    runs = retrain_runs(small_study)
    assert len(runs) == 1 and runs.status.iloc[0] == "KILLED"  # not left RUNNING, not looking complete
    assert "retrain.t0.s0" not in journal_study(small_study).user_attrs


# ------------------------------------------------------------------ sweeps scored without training
def test_a_sweep_scored_by_macs_trains_nothing_and_retrain_takes_its_top(tmp_path, _mlflow_schema_template,
                                                                         monkeypatch, capsys):
    """objectives=[macs]: every accepted candidate is COMPLETE with its MACs, an MLflow run beside the
    rejected ones, no training; retrain top=1 then trains the highest-MACs architecture."""
    import mlflow  # (2 s to load: only the tests that read MLflow runs pay it)

    (tmp_path / "mlruns").mkdir(exist_ok=True)
    shutil.copyfile(_mlflow_schema_template, tmp_path / "mlruns" / "mlflow.db")
    space = ["model.wide=choice(32,48,80)", "model.dropout=0.0", "hydra.sweeper.direction=maximize",
             "hydra.sweep.dir=multirun/s"]
    p = sweep_smoke(tmp_path, *space, "hydra.sweeper.objectives=[macs]", "hydra.sweeper.n_trials=4")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    log = p.stdout + p.stderr
    assert "COMPLETE (scored, not trained): macs=" in log and "epoch 1/1" not in log
    assert "hydra.sweeper.params.optim.lr: does not change macs" in log  # a knob the score cannot see
    st = journal_study(tmp_path)
    assert st.user_attrs["archsearch.scored"] == "macs"
    done = [t for t in st.trials if t.user_attrs.get("state") == "COMPLETE"]
    assert len(done) == 4 and all(t.value == t.user_attrs["model.macs"] and t.user_attrs["scored"] == "macs"
                                  and not t.intermediate_values for t in done)
    assert any(t.user_attrs.get("state") == "REJECTED" and t.params["model.wide"] == 80 for t in st.trials)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["archsearch"])
    scored = runs[runs["tags.scored"] == "macs"]
    assert len(scored) == 4 and set(scored.status) == {"FINISHED"} and "metrics.val_acc" not in runs
    assert sorted(scored["metrics.model.macs"]) == sorted(t.value for t in done)

    # the same study continued with trained trials would mix MACs and accuracies: refused in one line
    p = sweep_smoke(tmp_path, *space, "hydra.sweeper.n_trials=5")  # the objectives default: val_acc, trained
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith(
        "error: hydra.sweeper.objectives: study 'smoke' in ") and "holds trials scored by macs without training, " \
        "these objectives are trained (val_acc); keep its objectives or start a new study with " \
        "hydra.sweeper.study_name=NEW" in p.stderr
    assert len(journal_study(tmp_path).trials) == len(st.trials)

    monkeypatch.chdir(tmp_path)
    code, out, err = run_main("report", capsys, "sweep=smoke")
    assert code == 0, err
    top = max(done, key=lambda t: (t.value, -t.number))
    assert "study smoke: 4 scored without training, " in out
    assert f"best macs {int(top.value):,} (trial {top.number})" in out
    code, out, err = run_main("retrain", capsys, "sweep=smoke", "top=1", *FAST)
    assert code == 0, err
    rec = journal_study(tmp_path).user_attrs[f"retrain.t{top.number}.s0"]
    assert "model.wide=48" in rec["overrides"] and rec["epochs"] == 1
    code, out, err = run_main("export", capsys, "sweep=smoke", f"trial={top.number}", "name=scored_top",
                              f"out={tmp_path / 'models' / 'model'}")
    assert code == 0, err
    assert "scored without training by macs" in out
    assert "# proxy: scored without training by macs" in (tmp_path / "models" / "model" / "scored_top.yaml").read_text()
    # a model folder on the search path: overwrite=true replaces the file there (not "already exists")
    code, out, err = run_main("export", capsys, "sweep=smoke", f"trial={top.number}", "name=scored_top",
                              f"out={tmp_path / 'models' / 'model'}", "overwrite=true",
                              f"hydra.searchpath=[file://{tmp_path / 'models'}]")
    assert code == 0, err
