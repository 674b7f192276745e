"""retrain (a sweep's best trials on the full recipe), export (a trial as a model file) and the
report's proxy-vs-full table with rank correlations. One real smoke sweep per module (a
subprocess, synthetic data, quarter-width dilated_sep, 1-epoch trials); the commands run in
process on it. Cases that need no training use studies built directly with Optuna."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TINY = ["data.n_train=384", "data.n_test=64", "data.val_size=96", "hydra.sweeper.sampler.n_startup_trials=100",
        "model.narrow=8", "budget.max_params=100000"]  # dilated_sep at a quarter of its width
FAST = ["trainer.epochs=1", "trainer.amp=off", "trainer.channels_last=true", "trainer.tta=flip",
        "trainer.progress=false", "trainer.workers=0"]
ENQUEUED = [{"model.wide": 32, "model.dropout": 0.0, "optim.lr": 0.05},
            {"model.wide": 48, "model.dropout": 0.0, "optim.lr": 0.05},
            {"model.wide": 32, "model.dropout": 0.05, "optim.lr": 0.02}]


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


@pytest.fixture(scope="module")
def swept(tmp_path_factory, _mlflow_schema_template):
    """A finished smoke study of 3 one-epoch trials (known parameters), its MLflow parent run."""
    d = tmp_path_factory.mktemp("swept")
    (d / "mlruns").mkdir()
    shutil.copyfile(_mlflow_schema_template, d / "mlruns" / "mlflow.db")
    st = journal_study(d)
    for p in ENQUEUED:
        st.enqueue_trial(p)
    cmd = [sys.executable, "-m", "archsearch.train", "-m", "sweep=smoke", *TINY, *FAST,
           "model.wide=choice(32,48)", "hydra.sweeper.n_trials=3", "hydra.sweeper.pruner={name:none}",
           "hydra.sweep.dir=multirun/s"]
    p = subprocess.run(cmd, cwd=d, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return d


def run_main(module, capsys, *args):
    import importlib

    code = importlib.import_module(f"archsearch.{module}").main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def retrain_runs(base):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{base}/mlruns/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["archsearch"])
    return runs[runs["tags.archsearch.kind"] == "retrain"] if "tags.archsearch.kind" in runs else runs[:0]


# ------------------------------------------------------------------ retrain + report on a real sweep
def test_retrain_top_trials_full_recipe_mlflow_and_study_records(swept, monkeypatch, capsys):
    from archsearch.search.selection import complete_trials

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


# ------------------------------------------------------------------ export
def test_export_writes_a_model_that_validates_and_trains(swept, tmp_path, monkeypatch, capsys, run_validate):
    from omegaconf import OmegaConf

    from archsearch import fit

    monkeypatch.chdir(swept)
    st = journal_study(swept)
    t = next(t for t in st.trials if t.params.get("model.wide") == 48 and t.user_attrs["state"] == "COMPLETE")
    out = tmp_path / "myconf" / "model"
    code, stdout, err = run_main("export", capsys, "sweep=smoke", f"trial={t.number}", "name=mynet", f"out={out}")
    assert code == 0, err
    path = out / "mynet.yaml"
    text = path.read_text()
    assert stdout.startswith(f"wrote {path}\nmynet: trial {t.number} of study 'smoke', ")
    assert f"# Exported by python -m archsearch.export from trial {t.number} of study 'smoke'" in text
    assert "#   storage: journal:" in text and "dilated_sep.yaml" in text
    assert f"model settings applied: model.narrow=8 model.wide=48 model.dropout={t.params['model.dropout']}" in text
    assert f"# trained with: optim.lr={t.params['optim.lr']!r}" in text
    assert f"{t.user_attrs['model.params']:,} params, RF 61" in text
    node = OmegaConf.load(path)
    assert node.name == "mynet" and node.wide == 48 and node.narrow == 8
    assert OmegaConf.to_container(node)["layers"][1]["out"] == "${model.wide}"  # the knob reference is kept
    sp = f"hydra.searchpath=[file://{tmp_path / 'myconf'}]"
    assert run_validate("model=mynet", sp)[0] == 0
    res = fit(overrides=[sp, "model=mynet", "data=synthetic", "data.n_train=200", "data.val_size=50",
                         "data.n_test=50", "trainer.batch_size=50", "tracking=none", *FAST], out_dir=tmp_path / "run")
    assert res.epochs == 1 and res.params == t.user_attrs["model.params"]
    # an existing file is kept unless overwrite=true
    code, _, err = run_main("export", capsys, "sweep=smoke", f"trial={t.number}", "name=mynet", f"out={out}")
    assert code == 2 and err == f"error: overwrite: {path} exists; choose another name= or pass overwrite=true " \
                                "to replace it\n"
    code, _, err = run_main("export", capsys, "sweep=smoke", "trial=best", "name=mynet", f"out={out}",
                            "overwrite=true")
    assert code == 0, err


def test_export_keeps_knobs_and_replaces_nested_paths(tmp_path, monkeypatch, capsys, run_validate):
    """An arch_residual trial (built directly, no training): nested stage paths and knobs."""
    from omegaconf import OmegaConf

    from archsearch.config.compose import load_spec
    from archsearch.grammar.analysis import analyze

    monkeypatch.chdir(tmp_path)
    st = journal_study(tmp_path, "arch_residual")
    params = {"model.w1": 24, "model.w2": 48, "model.w3": 64, "model.depth": 2,
              "model.stages.c1.1.body.0.body.0.op": "conv",
              "model.stages.c1.1.body.0.body.0.k": 5, "model.stages.c2.1.body.0.body.1.d": 3, "optim.lr": 0.1}
    add_trial(st, params, value=0.61)
    out = tmp_path / "conf" / "model"
    code, stdout, err = run_main("export", capsys, "sweep=arch_residual", "name=res_best", f"out={out}")
    assert code == 0, err
    text = (out / "res_best.yaml").read_text()
    model = OmegaConf.to_container(OmegaConf.load(out / "res_best.yaml"))
    assert model["w1"] == 24 and model["depth"] == 2 and model["name"] == "res_best"
    first = model["stages"]["c1"][1]["body"][0]["body"][0]
    assert first == {"op": "conv", "out": "${model.w1}", "k": 5}  # replaced at its path, the knob kept
    assert model["stages"]["c2"][1]["body"][0]["body"][1]["d"] == 3
    assert model["stages"]["c1"][1]["times"] == "${model.depth}"
    expected = analyze(load_spec("res_dilated", [f"{k}={v}" for k, v in params.items() if k.startswith("model.")]))
    assert f"# {expected.params:,} params, RF {expected.rf}," in text and "# trained with: optim.lr=0.1" in text
    assert "# proxy (the sweep's training): val_acc 0.6100" in text
    assert run_validate("model=res_best", f"hydra.searchpath=[file://{tmp_path / 'conf'}]")[0] == 0


def test_best_trial_prefers_the_full_recipe_when_retrained(tmp_path):
    from archsearch.export import best_trial

    st = journal_study(tmp_path)
    for i, v in enumerate((0.9, 0.8, 0.7)):
        add_trial(st, {"model.wide": 32, "optim.lr": 0.01 * (i + 1)}, value=v)
    assert best_trial(st).number == 0  # nothing retrained: the best proxy trial
    for n, seeds in ((0, (0.60, 0.62)), (2, (0.70, 0.64))):
        for s, v in enumerate(seeds):
            st.set_user_attr(f"retrain.t{n}.s{s}", {"val_acc": v, "test_acc_single_view": v})
    assert best_trial(st).number == 2  # mean full-recipe val 0.67 beats 0.61


# ------------------------------------------------------------------ the report's table on a built study
def test_report_proxy_vs_full_needs_three_for_a_rank(tmp_path, monkeypatch, capsys):
    from archsearch.search.proxy_rank import proxy_vs_full, rank_agreement

    monkeypatch.chdir(tmp_path)
    st = journal_study(tmp_path)
    for i, v in enumerate((0.5, 0.4, 0.3)):
        add_trial(st, {"model.wide": 32, "optim.lr": 0.01 * (i + 1)}, value=v,
                  **{"model.params": 1000 + i, "model.macs": 9000 - i})
    recs = {(0, 0): (0.70, 0.68), (0, 1): (0.72, 0.66), (1, 0): (0.75, 0.74)}
    for (n, s), (val, test) in recs.items():
        st.set_user_attr(f"retrain.t{n}.s{s}", {"val_acc": val, "test_acc": test + 0.01, "test_acc_single_view": test,
                                                "epochs": 30, "run_id": None, "params": 1000 + n, "rf": 61})
    table = proxy_vs_full(st)
    assert list(table.trial) == [0, 1]
    row = table.iloc[0]
    assert row.full_val_acc == pytest.approx(0.71) and row.full_test_acc == pytest.approx(0.67)
    assert row.full_test_s0 == pytest.approx(0.68) and row.full_test_s1 == pytest.approx(0.66) and row.seeds == 2
    assert math.isnan(table.full_test_s1.iloc[1]) and row.params == 1000
    assert rank_agreement(table) == {"n_trials": 2, "note": "needs >= 3 retrained trials, has 2"}
    code, out, err = run_main("report", capsys, "sweep=smoke", "tracking=none")
    assert code == 0, err
    assert "proxy vs full recipe (2 retrained trials" in out
    assert "rank agreement of proxy and full recipe: needs >= 3 retrained trials, has 2" in out
    summary = json.loads((tmp_path / "outputs" / "reports" / "smoke" / "summary.json").read_text())
    assert summary["rank"]["n_trials"] == 2
    # a third retrained trial, ranked the other way round by the full recipe: tau = rho = -1
    st.set_user_attr("retrain.t2.s0", {"val_acc": 0.8, "test_acc_single_view": 0.8, "params": 1002, "rf": 61})
    agreement = rank_agreement(proxy_vs_full(st))
    assert agreement["proxy_val_acc_vs_full_val_acc"] == {"n": 3, "kendall_tau_b": -1.0, "spearman_rho": -1.0}
    # beside it, the proxies that need no training: here the parameter count ranks them all right
    assert agreement["free"] == {"params": {"n": 3, "kendall_tau_b": 1.0, "spearman_rho": 1.0},
                                 "macs": {"n": 3, "kendall_tau_b": -1.0, "spearman_rho": -1.0}}
    code, out, err = run_main("report", capsys, "sweep=smoke", "tracking=none")
    assert code == 0, err
    assert ("no-training proxies vs full-recipe val_acc: params tau-b +1.000 rho +1.000 (n=3); "
            "MACs tau-b -1.000 rho -1.000 (n=3)") in out
    assert "cost of the smoke proxy: the sweep's data and epochs are unknown" in out  # a study built by hand


def test_report_ranks_another_proxy_against_the_retrained_study(tmp_path, monkeypatch, capsys):
    """full_from: the same candidates swept under another proxy (other trial numbers, a
    rejection in between) are matched to the retrained study's records by their sampled values."""
    monkeypatch.chdir(tmp_path)
    full, other = journal_study(tmp_path), journal_study(tmp_path, "smoke_small")
    lrs = (0.01, 0.02, 0.03, 0.04)
    for i, lr in enumerate(lrs):  # proxy 0.5 .. 0.2; the full recipe ranks them the other way round
        add_trial(full, {"model.wide": 32, "optim.lr": lr}, value=0.5 - 0.1 * i, **{"model.params": 1000 + i})
        full.set_user_attr(f"retrain.t{i}.s0", {"val_acc": 0.7 + 0.01 * i, "test_acc_single_view": 0.7 + 0.01 * i,
                                                "params": 1000 + i, "rf": 61})
    add_trial(other, {"model.wide": 32, "optim.lr": 0.5}, state="REJECTED")
    for i, lr in enumerate(lrs):  # the other proxy agrees with the full recipe
        add_trial(other, {"model.wide": 32, "optim.lr": lr}, value=0.6 + 0.05 * i, **{"model.params": 1000 + i})
    add_trial(full, {"model.wide": 32, "optim.lr": 0.05}, value=0.1, **{"model.params": 1004})  # not retrained
    add_trial(other, {"model.wide": 32, "optim.lr": 0.05}, value=0.9)  # the best, with no params recorded
    other.set_user_attr("archsearch.base_overrides", ["sweep=smoke", "proxy=small", "hydra.sweeper.n_trials=5"])
    code, out, err = run_main("report", capsys, "sweep=smoke", "hydra.sweeper.study_name=smoke_small",
                              "full_from=smoke", "tracking=none")
    assert code == 0, err
    # what a trial of this proxy costs: its sweep's data and epochs, and the trials' wall time
    # (the sweep's own trainer.epochs=2 wins over the proxy's 8, as when the sweep ran)
    assert "cost of the smoke_small proxy: up to 2 epochs on 10,000 training images a trial (20,000 images); " \
           "wall time a trained trial: median 0 s (0-0 s, 5 trials)" in out
    assert "best val_acc 0.9000 (trial 5) {" in out  # a trial without a recorded size still has its summary line
    assert "proxy val_acc of smoke_small vs smoke over all 5 candidates both trained: Kendall tau-b -1.000" in out
    assert "proxy vs full recipe (4 retrained trials of smoke, matched by sampled values" in out
    assert "proxy val_acc vs full-recipe val_acc (mean over seeds): Kendall tau-b +1.000, Spearman rho +1.000 (n=4)" in out
    assert "proxy val_acc vs the proxy val_acc of smoke: Kendall tau-b -1.000, Spearman rho -1.000 (n=4)" in out
    table = (tmp_path / "outputs" / "reports" / "smoke_small" / "proxy_vs_full.csv").read_text().splitlines()
    assert table[0].startswith("trial,ref_trial,params,rf,macs,proxy_val_acc,ref_proxy_val_acc,full_val_acc")
    assert [r.split(",")[:2] for r in table[1:]] == [["4", "3"], ["3", "2"], ["2", "1"], ["1", "0"]]
    summary = json.loads((tmp_path / "outputs" / "reports" / "smoke_small" / "summary.json").read_text())
    assert summary["rank"]["full_from"] == "smoke" and summary["rank"]["n_trials"] == 4
    assert summary["rank"]["cost"]["train_images"] == 10_000 and summary["rank"]["cost"]["trials"] == 5
    assert summary["proxies"] == {"full_from": "smoke", "n": 5, "kendall_tau_b": -1.0, "spearman_rho": -1.0}
    code, out, err = run_main("report", capsys, "sweep=smoke", "full_from=nope", "tracking=none")
    assert code == 2 and err.startswith("error: full_from: no study 'nope' in journal:") and "\n" == err[-1:]
    assert err.count("\n") == 1


# ------------------------------------------------------------------ rank correlation
def test_rank_correlation_perfect_reversed_and_ties():
    import warnings

    from archsearch.search.rank import kendall_tau_b, spearman_rho

    x = [0.1, 0.4, 0.2, 0.9]
    assert kendall_tau_b(x, [v * 2 for v in x]) == pytest.approx(1.0)
    assert spearman_rho(x, [v * 2 for v in x]) == pytest.approx(1.0)
    assert kendall_tau_b(x, [-v for v in x]) == pytest.approx(-1.0)
    assert spearman_rho(x, [-v for v in x]) == pytest.approx(-1.0)
    five = [0.6, 0.65, 0.7, 0.75, 0.9]  # complete (dis)agreement is exactly +1 / -1 (scipy alone: 0.9999999999999999)
    assert (kendall_tau_b(five, sorted(five)), spearman_rho(five, five[::-1])) == (1.0, -1.0)
    # by hand: 7 concordant, 1 discordant, one pair tied in x, one in y, of 10:
    # tau-b = (7 - 1) / sqrt((10 - 1) * (10 - 1)); rho from ranks [1, 2.5, 2.5, 4, 5] and [2, 1, 3.5, 3.5, 5]
    a, b = [1, 2, 2, 3, 4], [2, 1, 3, 3, 5]
    assert kendall_tau_b(a, b) == pytest.approx(6 / 9)
    assert spearman_rho(a, b) == pytest.approx(7.25 / 9.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ranking to compare: nan, without scipy's warning in the report
        assert math.isnan(kendall_tau_b([1, 1, 1], [1, 2, 3])) and math.isnan(spearman_rho([1, 1, 1], [1, 2, 3]))
        assert math.isnan(kendall_tau_b([0.5], [0.7])) and math.isnan(spearman_rho([], []))
    with pytest.raises(ValueError, match="must pair up"):
        kendall_tau_b([1, 2], [1])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # scipy warns on a constant list (its answer: nan)
def test_rank_correlation_agrees_with_scipy():
    import random

    from scipy import stats

    from archsearch.search.rank import kendall_tau_b, spearman_rho

    rng = random.Random(0)
    for n in (3, 5, 12):
        for _ in range(20):
            x = [rng.choice([0.1, 0.2, 0.3, 0.5]) for _ in range(n)]
            y = [rng.random() if rng.random() < 0.5 else rng.choice([0.6, 0.7]) for _ in range(n)]
            tau, rho = stats.kendalltau(x, y).statistic, stats.spearmanr(x, y).statistic
            for mine, ref in ((kendall_tau_b(x, y), tau), (spearman_rho(x, y), rho)):
                assert (math.isnan(mine) and math.isnan(ref)) or mine == pytest.approx(ref)


# ------------------------------------------------------------------ user mistakes: one line, exit 2
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


RETRAIN_MISTAKES = [
    (["sweep=nope"], "error: sweep: no config 'nope'; available: arch_dilated, arch_macs, arch_residual, hparams, pareto, "
                     "proxy_rank, smoke"),
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


EXPORT_MISTAKES = [
    (["sweep=smoke"], "error: name: the new model's name, e.g. name=res_best"),
    (["sweep=smoke", "name=../x"], "error: name: the new model's name"),
    (["sweep=smoke", "name=x", "out=somewhere"], "error: out: must be a model/ folder of a config search path"),
    (["sweep=smoke", "name=x", "trial=first"], "error: trial: expected a trial number or best; got 'first'"),
    (["sweep=smoke", "name=x", "trial=1"], "error: trial: trial 1 of study 'smoke' is PRUNED, not COMPLETE"),
    (["sweep=smoke", "name=dilated_sep", "out=conf/model"], "error: name: a model 'dilated_sep' already exists"),
    (["sweep=smoke", "name=x", "overwrite=yes"], "error: overwrite: must be true or false; got 'yes'"),
]


@pytest.mark.parametrize("args,message", EXPORT_MISTAKES, ids=[" ".join(a) for a, _ in EXPORT_MISTAKES])
def test_export_mistakes_are_one_line(small_study, capsys, args, message):
    code, out, err = run_main("export", capsys, *args)
    assert code == 2 and err.startswith(message) and err.count("\n") == 1 and not out, err
    assert not list(small_study.rglob("x.yaml"))


def test_cli_mistakes_exit_2_without_a_traceback(small_study):
    for module, args, message in (("retrain", ["sweep=smoke", "top=0"], "error: top: must be a whole number"),
                                  ("export", ["sweep=nope", "name=x"], "error: sweep: no config 'nope'")):
        p = subprocess.run([sys.executable, "-m", f"archsearch.{module}", *args], cwd=small_study,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 2 and p.stderr.startswith(message) and p.stderr.count("\n") == 1, p.stderr
        assert "Traceback" not in p.stderr


def test_sigterm_stops_a_retrain_as_killed_and_records_nothing(small_study):
    """kill (or a scheduler's pre-emption) mid-training: status 143, the MLflow run KILLED, no study record."""
    import signal
    import time

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


def test_export_warns_when_the_rebuilt_model_is_not_the_swept_one(small_study, capsys):
    """A study whose sweep command's model.* overrides were not recorded: the params disagree."""
    st = journal_study(small_study, "old")
    add_trial(st, {"model.wide": 32, "optim.lr": 0.05}, **{"model.params": 12345})
    code, out, err = run_main("export", capsys, "sweep=smoke", "hydra.sweeper.study_name=old", "name=x",
                              f"out={small_study / 'conf' / 'model'}")
    assert code == 0, err
    assert out.rstrip().splitlines()[-1].startswith("note: trial 0 had 12,345 params in the sweep, this config has ")


def test_top_takes_the_best_trial_of_each_architecture():
    from types import SimpleNamespace

    from archsearch.search.selection import distinct_architectures

    def t(n, wide, lr):
        return SimpleNamespace(number=n, params={"model.wide": wide, "optim.lr": lr})

    ranked = [t(29, 48, 0.05), t(51, 48, 0.04), t(7, 32, 0.05), t(3, 48, 0.09), t(9, 64, 0.01)]
    assert [x.number for x in distinct_architectures(ranked)] == [29, 7, 9]  # lr variants of 48 dropped
    # scored without training: same MACs, the same candidate as far as the score can tell
    scored = [SimpleNamespace(number=n, values=[m], params={"model.d": n}) for n, m in ((89, 88), (97, 88), (168, 86))]
    assert [x.number for x in distinct_architectures(scored, by_score=True)] == [89, 168]


def test_report_picks_the_cheapest_proxy_that_ranks_like_the_full_recipe(tmp_path, monkeypatch, capsys):
    """proxies=: the same candidates swept under other proxies, each ranked against the retrained
    study's full-recipe records beside the no-training proxies, cheapest first, and the pick."""
    monkeypatch.chdir(tmp_path)
    full, small, wrong = (journal_study(tmp_path, n) for n in ("smoke", "smoke_small", "smoke_wrong"))
    lrs = (0.01, 0.02, 0.03, 0.04)
    for i, lr in enumerate(lrs):  # the full recipe: later is better; the parameter count says the opposite
        params = {"model.wide": 32, "optim.lr": lr}
        add_trial(full, params, value=0.5 - 0.1 * i, **{"model.params": 1000 - i})  # this study's proxy: reversed
        full.set_user_attr(f"retrain.t{i}.s0", {"val_acc": 0.7 + 0.01 * i, "test_acc_single_view": 0.7,
                                                "params": 1000 - i, "rf": 61})
        add_trial(small, params, value=0.6 + 0.05 * i)  # agrees with the full recipe
        add_trial(wrong, params, value=0.6 - 0.05 * i)  # does not
    small.set_user_attr("archsearch.base_overrides", ["sweep=smoke", "proxy=small", "trainer.epochs=8"])
    wrong.set_user_attr("archsearch.base_overrides", ["sweep=smoke", "proxy=tiny", "trainer.epochs=5"])
    code, out, err = run_main("report", capsys, "sweep=smoke", "proxies=smoke_small,smoke_wrong", "tracking=none")
    assert code == 0, err
    block = out[out.index("which proxy:"):].splitlines()
    assert block[1] == "  params (no training): 0 images; Kendall tau-b -1.000, Spearman rho -1.000 (n=4)"
    assert block[3].startswith("  smoke_wrong: 25,000 images") and block[3].endswith("tau-b -1.000, Spearman rho "
                                                                                     "-1.000 (n=4)")
    assert block[4].startswith("  smoke_small: 80,000 images") and "tau-b +1.000" in block[4]
    assert block[5].startswith("  smoke: unknown images")  # a study built by hand: its command is not recorded
    assert block[6] == "  cheapest with tau-b >= 0.6: smoke_small (n=4)"
    summary = json.loads((tmp_path / "outputs" / "reports" / "smoke" / "summary.json").read_text())
    assert summary["proxy_choice"]["pick"] == "smoke_small" and len(summary["proxy_choice"]["proxies"]) == 5
    code, out, err = run_main("report", capsys, "sweep=smoke", "proxies=smoke_wrong", "min_tau=1", "tracking=none")
    assert code == 0 and "none reaches tau-b >= 1 over these 4 retrained trials" in out
    # mistakes: one line, exit 2
    for args, message in ((["proxies=nope"], "error: proxies: no study 'nope' in journal:"),
                          (["proxies="], "error: proxies: name the studies swept under other proxies"),
                          (["proxies=smoke_small", "min_tau=2"], "error: min_tau: must be a number from -1 to 1; got '2'"),
                          (["min_tau=0.5"], "error: min_tau: only with proxies="),
                          (["hydra.sweeper.study_name=smoke_small", "proxies=smoke_wrong"],
                           "error: proxies: study 'smoke_small' has no retrained trials")):
        code, out, err = run_main("report", capsys, "sweep=smoke", *args, "tracking=none")
        assert code == 2 and err.startswith(message) and err.count("\n") == 1, err


def test_proxy_cost_recomposes_a_sweep_over_a_users_model_directory(tmp_path):
    """The cost line reads the sweep's data and epochs from its recorded command, which can name a
    model that only exists in the user's own config directory (hydra.searchpath)."""
    from archsearch.config.paths import CONF_DIR
    from archsearch.search.proxy_rank import proxy_cost

    (tmp_path / "myconf" / "model").mkdir(parents=True)
    shutil.copyfile(CONF_DIR / "model" / "dilated_sep.yaml", tmp_path / "myconf" / "model" / "mynet.yaml")
    st = journal_study(tmp_path)
    add_trial(st, {"model.wide": 32, "optim.lr": 0.01}, value=0.5)
    st.set_user_attr("archsearch.base_overrides", ["sweep=smoke", "model=mynet", "proxy=tiny",
                                                   f"hydra.searchpath=[file://{tmp_path / 'myconf'}]",
                                                   "hydra.sweeper.n_trials=3"])
    st.set_user_attr("archsearch.max_epochs", 2)
    cost = proxy_cost(st)
    assert cost["train_images"] == 5000 and cost["epochs"] == 2 and cost["trials"] == 1 and "note" not in cost


# ------------------------------------------------------------------ sweeps scored without training
def test_a_sweep_scored_by_macs_trains_nothing_and_retrain_takes_its_top(tmp_path, _mlflow_schema_template,
                                                                         monkeypatch, capsys):
    """objectives=[macs]: every accepted candidate is COMPLETE with its MACs, an MLflow run beside the
    rejected ones, no training; retrain top=1 then trains the highest-MACs architecture."""
    import mlflow

    (tmp_path / "mlruns").mkdir(exist_ok=True)
    shutil.copyfile(_mlflow_schema_template, tmp_path / "mlruns" / "mlflow.db")
    cmd = [sys.executable, "-m", "archsearch.train", "-m", "sweep=smoke", *TINY, *FAST,
           "model.wide=choice(32,48,80)", "model.dropout=0.0",
           "hydra.sweeper.objectives=[macs]", "hydra.sweeper.direction=maximize", "hydra.sweeper.n_trials=4",
           "hydra.sweep.dir=multirun/s"]
    p = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
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
    again = [a for a in cmd if not a.startswith(("hydra.sweeper.objectives", "hydra.sweeper.n_trials"))]
    p = subprocess.run([*again, "hydra.sweeper.n_trials=5"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
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


def test_report_on_a_scored_study_ranks_its_score_as_the_no_training_proxy(tmp_path, monkeypatch, capsys):
    """A study scored by MACs has no proxy accuracy: its rank agreement is the MACs row, and the
    proxy choice does not list it a second time."""
    monkeypatch.chdir(tmp_path)
    st = journal_study(tmp_path)
    st.set_user_attr("archsearch.scored", "macs")
    for i in range(3):  # more MACs, better full recipe; params the other way round
        add_trial(st, {"model.wide": 32 + 8 * i}, value=1e6 * (i + 1), scored="macs",
                  **{"model.macs": 1e6 * (i + 1), "model.params": 5000 - i})
        st.set_user_attr(f"retrain.t{i}.s0", {"val_acc": 0.7 + 0.01 * i, "test_acc_single_view": 0.7,
                                              "params": 5000 - i, "rf": 61})
    code, out, err = run_main("report", capsys, "sweep=smoke", "tracking=none", "proxies=smoke")
    assert code == 0, err
    assert "the trials were scored without training: their proxy is the no-training row below" in out
    assert "no-training proxies vs full-recipe val_acc: params tau-b -1.000 rho -1.000 (n=3); " \
           "MACs tau-b +1.000 rho +1.000 (n=3)" in out
    assert "cost of the smoke proxy: no training (scored by macs from the analysis)" in out
    assert "cheapest with tau-b >= 0.6: MACs (no training) (n=3)" in out
    assert "  smoke: " not in out  # its own row would repeat the MACs row
    # the proxy-vs-full table is ordered by the score, with no empty proxy-accuracy column
    rows = (tmp_path / "outputs" / "reports" / "smoke" / "proxy_vs_full.csv").read_text().splitlines()
    assert "proxy_val_acc" not in rows[0] and [r.split(",")[0] for r in rows[1:]] == ["2", "1", "0"]
