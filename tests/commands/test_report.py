"""``python -m archsearch.report``'s proxy-vs-full table, rank correlations, proxy agreement and
proxy choice, on studies built directly with Optuna (the report on a real sweep is in
test_retrain.py), and the rank correlations themselves."""

import json
import math
import random
import re
import shutil
import warnings

import optuna
import pytest
from studies import add_trial, journal_study, run_main

from archsearch.config.paths import CONF_DIR
from archsearch.search.proxy_rank import proxy_cost, proxy_vs_full, rank_agreement
from archsearch.search.time_to_accuracy import print_time_to_accuracy, time_to_accuracy


# ------------------------------------------------------------------ the report's table on a built study
def test_report_proxy_vs_full_needs_three_for_a_rank(tmp_path, monkeypatch, capsys):
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


# ------------------------------------------------------------------ which proxy
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


# ------------------------------------------------------------------ a study scored without training
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


# ------------------------------------------------------------------ rank correlation
def test_rank_correlation_perfect_reversed_and_ties():
    # (scipy.stats takes a second to load: only these two tests pay it)
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


# ------------------------------------------------------------------ the leaderboard as a user reads it
def test_report_table_shows_durations_as_minutes_and_the_sampled_values_in_full(small_study, capsys):
    from archsearch.search.leaderboard import leaderboard, print_leaderboard
    from archsearch.search.results import open_study

    long = {"model.wide": 32, "optim.lr": 0.05, **{f"model.knob_with_a_long_name_{i}": i for i in range(4)}}
    add_trial(journal_study(small_study), long, value=0.61)
    code, out, err = run_main("report", capsys, "sweep=smoke", "tracking=none")
    assert code == 0, err
    header = out.splitlines()[0].split()
    assert header[-1] == "sampled" and "time" in header and "to_85%" in header and "duration_s" not in header
    assert json.dumps(long, sort_keys=True) in out  # never cut, however long
    assert not re.search(r"\d\.\d{4}\s+\{", out)  # no 40.8000-style durations before the sampled column
    df = leaderboard(open_study(["sweep=smoke", "tracking=none"])[1])
    df["duration_s"] = [40.8, 125.4, 3725.0, float("nan")][:len(df)]
    print_leaderboard(df)
    rows = capsys.readouterr().out.splitlines()[1:]
    assert [re.search(r"\s(\d+:\d\d(?::\d\d)?)\s+\{", r) and re.search(r"\s(\d+:\d\d(?::\d\d)?)\s+\{", r).group(1)
            for r in rows] == ["0:41", "2:05", "1:02:05", None]


def test_the_pareto_plot_draws_rejected_candidates_apart_never_at_an_accuracy(small_study):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from archsearch.search.leaderboard import leaderboard, pareto_figure
    from archsearch.search.results import open_study

    df = leaderboard(open_study(["sweep=smoke", "tracking=none"])[1])
    df.loc[df.state == "REJECTED", "params"] = 250_000  # the analysis's figure, known for a rejection
    fig = pareto_figure(df, "smoke", 200_000)
    try:
        top, strip = fig.axes
        drawn = [tuple(p) for c in top.collections for p in c.get_offsets()]
        assert all(x != 250_000 for x, _ in drawn)  # on the accuracy axes: only trained trials
        crosses = [tuple(p) for c in strip.collections for p in c.get_offsets()]
        assert [x for x, _ in crosses] == [250_000]
        assert "rejected (1)" in [t.get_text() for t in strip.get_legend().get_texts()]
    finally:
        plt.close(fig)


def test_time_to_accuracy_shows_when_each_retrained_run_reached_each_level(capsys):
    """report's time-to-accuracy table: per retrained (trial, seed), the epoch and wall minutes at which
    validation first reached 80/85/90% (the run's MLflow metrics), '-' for a level never reached."""
    st = optuna.create_study(direction="maximize")
    st.set_user_attr("retrain.t4.s1", {"val_acc": 0.861, "test_acc_single_view": 0.855, "epochs": 20,
                                       "seconds": 1500.0, "run_id": "r41"})
    st.set_user_attr("retrain.t4.s0", {"val_acc": 0.83, "test_acc_single_view": 0.829, "epochs": 20,
                                       "seconds": 1380.0, "run_id": "r40"})
    runs = {"r40": {"epoch_to_val80": 15, "seconds_to_val80": 1035.0},
            "r41": {"epoch_to_val80": 12, "seconds_to_val80": 900.0, "epoch_to_val85": 19, "seconds_to_val85": 1425.0}}
    table = time_to_accuracy(st, runs)
    assert list(zip(table.trial, table.seed)) == [(4, 0), (4, 1)]
    assert table.min_to_val85[1] == 23.75 and table.epoch_to_val85.isna()[0] and table.epoch_to_val90.isna().all()
    print_time_to_accuracy(table)
    lines = capsys.readouterr().out.splitlines()
    assert "val 80%" in lines[0] and "val 85%" in lines[0] and "val 90%" in lines[0]
    assert "epoch 15, 17.2 min" in lines[1] and "83.00%" in lines[1] and "23.0 min" in lines[1]
    assert "epoch 12, 15.0 min" in lines[2] and "epoch 19, 23.8 min" in lines[2] and lines[2].split()[-3] == "-"
