"""``python -m archsearch.report sweep=NAME``: a study's leaderboard and accuracy-vs-params plot.

Reads the Optuna study (states, objective values, sampled parameters, epochs reported)
and its MLflow child runs (test accuracy) into pandas; prints the leaderboard and writes
``leaderboard.csv``, ``pareto.png`` (accuracy vs parameters, the Pareto front and the
budget's parameter line) and ``summary.json`` to ``outputs/reports/<study>/``.

When trials of the study were retrained with the full recipe (``python -m archsearch.retrain``,
the study's ``retrain.t<trial>.s<seed>`` attributes), it also prints the proxy-vs-full table
(proxy validation accuracy beside the full recipe's validation and single-view test accuracy
per seed and their means) and how well the proxy ranks them: Kendall's tau-b and Spearman's
rho over the retrained trials (at least 3), beside the same for two proxies that cost no
training (the parameter count and the MACs: a trained proxy should rank better than they do);
written to ``proxy_vs_full.csv`` and the ``rank`` entry of ``summary.json``; and each retrained
run's time to accuracy (the epoch and wall minutes at which validation first reached 80%, 85%
and 90%, from its MLflow metrics), written to ``time_to_accuracy.csv`` and ``summary.json``.

``full_from=STUDY`` takes the full-recipe records from another study of the same candidates
(swept under another proxy or proxy seed with the same sampler seed), matched by sampled
values, and adds how well the two studies' proxies agree with each other (over the retrained
candidates, and over every candidate both trained: with the same proxy at another ``seed``,
how repeatable the proxy is):
``python -m archsearch.report sweep=proxy_rank hydra.sweeper.study_name=proxy_rank_small full_from=proxy_rank``.
``proxies=STUDY[,STUDY...]`` answers which proxy to use: the retrained study's own proxy, each
named study's (the same candidates swept under other proxies) and the two no-training proxies,
cheapest first (training images x epochs a trial, median wall time), each with its Kendall tau-b
and Spearman rho against the full recipe's validation accuracy, and the cheapest whose tau-b
reaches ``min_tau`` (default 0.6); also ``proxy_choice.csv`` and ``summary.json``'s
``proxy_choice``:
``python -m archsearch.report sweep=proxy_rank proxies=proxy_rank_small``.
The study is found as the sweeper finds it (``hydra.sweeper.study_name`` /
``hydra.sweeper.storage`` overrides work the same way).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

from archsearch import cli
from archsearch.config.paths import base_dir
from archsearch.errors import ConfigError
from archsearch.files import write_whole
from archsearch.search.leaderboard import (
    fmt_cell,
    leaderboard,
    print_leaderboard,
    print_table,
    summary_line,
    write_outputs,
)
from archsearch.search.proxy_rank import (
    MIN_TAU,
    choice_lines,
    cost_line,
    full_plot,
    proxies_agreement,
    proxy_choice,
    proxy_cost,
    proxy_vs_full,
    rank_agreement,
    rank_lines,
)
from archsearch.search.results import load_named, open_study, retrained, score_column
from archsearch.search.time_to_accuracy import print_time_to_accuracy, time_to_accuracy
from archsearch.tracking import make_tracker

__all__ = ["main"]


def _report_retrained(study, out: Path, summary: dict, full_study=None,
                      budget_params: int | None = 200_000) -> list[Path]:
    """Print and write the proxy-vs-full table and the rank agreement, if any trial was retrained
    (in ``full_study``, if given: see :func:`proxy_vs_full`)."""
    table = proxy_vs_full(study, full_study=full_study)
    both = proxies_agreement(study, full_study) if full_study is not None else None
    if both is not None:
        tau, rho = fmt_cell(both["kendall_tau_b"]), fmt_cell(both["spearman_rho"])
        print(f"\nproxy val_acc of {study.study_name} vs {full_study.study_name} over all {both['n']} candidates both "
              f"trained: Kendall tau-b {tau}, Spearman rho {rho}")
        summary["proxies"] = {"full_from": full_study.study_name, **both}
    if not len(table):
        if full_study is not None:
            print(f"no trial of {study.study_name} matches a retrained trial of {full_study.study_name} "
                  "(the same sampled values)")
        return []
    where = f" of {full_study.study_name}, matched by sampled values" if full_study is not None else ""
    print(f"\nproxy vs full recipe ({len(table)} retrained trials{where}; test accuracy single view):")
    print_table(table)
    agreement = rank_agreement(table)
    if full_study is not None:
        agreement["full_from"] = full_study.study_name
    agreement["cost"] = proxy_cost(study)
    for line in [*rank_lines(agreement), cost_line(study.study_name, agreement["cost"])]:
        print(line)
    summary["rank"] = agreement
    csv = out / "proxy_vs_full.csv"
    table.to_csv(csv, index=False)
    return [csv, full_plot(table, out / "full_vs_params.png", study.study_name, budget_params)]


def _report_time(study, out: Path, summary: dict, runs: dict[str, dict[str, float]]) -> list[Path]:
    """Print and write when each retrained run's validation first reached 80%, 85% and 90%."""
    table = time_to_accuracy(study, runs)
    if not len(table):
        return []
    print("\ntime to accuracy (retrained runs; when validation first reached each level, wall time up to it):")
    print_time_to_accuracy(table)
    summary["time_to_accuracy"] = json.loads(table.to_json(orient="records"))
    csv = out / "time_to_accuracy.csv"
    table.to_csv(csv, index=False)
    return [csv]


def _min_tau(value: str | None) -> float:
    if value is None:
        return MIN_TAU
    try:
        v = float(value)
    except ValueError:
        v = float("nan")
    if not -1.0 <= v <= 1.0:
        raise ConfigError(f"min_tau: must be a number from -1 to 1; got {value!r}")
    return v


def _studies(argv: Sequence[str]):
    """The arguments read and the studies opened -> (min_tau, config, study, storage URL, the
    ``full_from`` study or None, the ``proxies`` studies or None)."""
    mine, rest = cli.split_args(argv, ("full_from", "proxies", "min_tau"))
    min_tau = _min_tau(mine.get("min_tau"))
    if "min_tau" in mine and "proxies" not in mine:
        raise ConfigError("min_tau: only with proxies= (the studies whose proxies to choose from)")
    cfg, study, url = open_study(rest)
    full_study = None
    if "full_from" in mine:
        if not mine["full_from"]:
            raise ConfigError("full_from: name the study whose trials were retrained, e.g. full_from=proxy_rank")
        full_study = load_named(cfg, mine["full_from"], "full_from")[0]
    others = None
    if "proxies" in mine:
        names = [n.strip() for n in mine["proxies"].split(",") if n.strip()]
        if not names:
            raise ConfigError("proxies: name the studies swept under other proxies, e.g. proxies=proxy_rank_small")
        others = [load_named(cfg, n, "proxies")[0] for n in names]
        ref = full_study or study
        if not retrained(ref):
            raise ConfigError(f"proxies: study {ref.study_name!r} has no retrained trials to rank the proxies "
                              "against; run python -m archsearch.retrain first (or name that study with full_from=)")
    return min_tau, cfg, study, url, full_study, others


def _report(argv: list[str]) -> int:
    try:
        min_tau, cfg, study, url, full_study, others = _studies(argv)
    except ValueError as e:  # any ValueError here is a bad argument or study (OmegaConf's too): one line, status 2
        raise ConfigError(str(e)) from None
    name, base = study.study_name, base_dir()
    tracker = make_tracker(OmegaConf.to_container(cfg.tracking, resolve=True), base)
    parent = study.user_attrs.get("mlflow_parent_run_id") if tracker.enabled else None
    runs = tracker.child_metrics(parent) if parent else {}  # read once: the leaderboard and the time table
    df = leaderboard(study, runs)
    out = base / "outputs" / "reports" / name
    files = write_outputs(df, out, name, OmegaConf.select(cfg, "budget.max_params"),
                          y=score_column(study) or "val_acc")
    print_leaderboard(df)
    line = summary_line(study, df)
    print(line)
    summary: dict = {"study": name, "storage": url, "summary": line, "rank": None}
    files += _report_retrained(study, out, summary, full_study, OmegaConf.select(cfg, "budget.max_params"))
    files += _report_time(study, out, summary, runs)
    if others is not None:
        table, pick = proxy_choice(full_study or study, [study, *others], min_tau)
        for line in choice_lines(table, pick, min_tau):
            print(line)
        summary["proxy_choice"] = {"min_tau": min_tau, "pick": pick,
                                   "proxies": json.loads(table.to_json(orient="records"))}
        table.to_csv(out / "proxy_choice.csv", index=False)
        files.append(out / "proxy_choice.csv")
    write_whole(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    files.append(out / "summary.json")
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.start(__doc__, _report, argv)


if __name__ == "__main__":
    cli.run(main)
