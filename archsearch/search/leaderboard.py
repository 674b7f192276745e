"""A study's trials as a table: the leaderboard (one row a trial, from Optuna and MLflow), its
Pareto front, the files a sweep writes at its end (CSV, JSON, the Pareto plot) and the one-line
summary the sweeper prints.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from optuna.trial import TrialState

from archsearch.search.results import COLUMNS, score_column, score_order, scored_by
from archsearch.search.space import TIMED
from archsearch.search.study import TRAINED


def leaderboard(study, runs: dict[str, dict[str, float]] | None = None):
    """One row per finished trial, best validation accuracy first (a study scored without training:
    best objective first; its val_acc is empty). ``runs``: the trials' MLflow runs' metrics
    (``Tracker.child_metrics``), what only the job measured; none without tracking."""
    runs = runs or {}
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.RUNNING or t.state == TrialState.WAITING:
            continue
        state = t.user_attrs.get("state") or t.state.name
        iv = t.intermediate_values
        if state == "COMPLETE" and t.values and not t.user_attrs.get("scored"):
            val = t.values[0]
        else:
            val = max(iv.values()) if iv else float("nan")
        if state == "REJECTED":
            val = float("nan")
        dur = ((t.datetime_complete - t.datetime_start).total_seconds()
               if t.datetime_complete and t.datetime_start else float("nan"))
        rid = t.user_attrs.get("mlflow_run_id")
        note = "; ".join(t.user_attrs.get("reasons", [])) or t.user_attrs.get("error", "")
        rows.append({
            "trial": t.number, "state": state, "val_acc": val,
            "test_acc": runs.get(rid, {}).get("test_acc", float("nan")),
            "params": t.user_attrs.get("model.params"), "rf": t.user_attrs.get("model.rf"),
            "macs": t.user_attrs.get("model.macs"), "ms_per_image": t.user_attrs.get("model.ms_per_image"),
            "epochs": len(iv),
            "epoch_to_val85": runs.get(rid, {}).get("epoch_to_val85", float("nan")), "duration_s": round(dur, 1),
            "sampled": json.dumps(t.params, sort_keys=True), "note": note, "run_id": rid,
        })
    df = pd.DataFrame(rows, columns=COLUMNS)
    order = {"COMPLETE": 0, "PRUNED": 1, "FAIL": 2, "INTERRUPTED": 3, "REJECTED": 4}
    key, high = score_order(study)
    key = key or "val_acc"
    if len(df):
        df["_o"] = df.state.map(order).fillna(9)
        df = df.sort_values(["_o", key], ascending=[True, not high]).drop(columns="_o").reset_index(drop=True)
    return df


def pareto_front(df):
    """Rows not dominated in (higher val_acc, fewer params), among COMPLETE trials."""
    ok = df[(df.state == "COMPLETE") & df.val_acc.notna() & df.params.notna()].sort_values(
        ["params", "val_acc"], ascending=[True, False])
    front, best = [], -1.0
    for i, r in ok.iterrows():
        if r.val_acc > best:
            front.append(i)
            best = r.val_acc
    return df.loc[front]


def write_outputs(df, out_dir: str | Path, study_name: str, budget_params: int | None = 200_000,
                  y: str = "val_acc") -> list[Path]:
    """leaderboard.csv and pareto.png: ``y`` (the best validation accuracy; a scored study's
    objective, e.g. ``macs``) against parameters, the budget line; the rejected candidates (never
    trained, so no accuracy) as crosses on a strip of their own under the plot. A study timed on
    its machine (``ms_per_image``) also gets macs-vs-time.png: MACs against time, and its front."""
    # matplotlib when a plot is drawn (pyplot takes half a second to load), with the file backend
    # chosen before pyplot loads
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv = out / "leaderboard.csv"
    df.to_csv(csv, index=False)
    fig = pareto_figure(df, study_name, budget_params, y)
    png = out / "pareto.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    files = [csv, png]
    if df.ms_per_image.notna().any():
        fig = time_figure(df, study_name)
        files.append(out / "macs-vs-time.png")
        fig.savefig(files[-1], dpi=100)
        plt.close(fig)
    return files


def pareto_figure(df, study_name: str, budget_params: int | None = 200_000, y: str = "val_acc"):
    """The Pareto plot as a matplotlib figure (its file backend chosen by the caller): ``y`` against
    parameters on the first axes; rejected candidates, if any, as crosses on a second axes below."""
    import matplotlib.pyplot as plt

    rej = df[(df.state == "REJECTED") & df.params.notna()]
    if len(rej):
        fig, (ax, strip) = plt.subplots(2, 1, figsize=(7, 5.2), sharex=True, gridspec_kw={"height_ratios": [6, 1]})
    else:
        fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"COMPLETE": ("o", "tab:blue"), "PRUNED": ("s", "tab:gray"), "FAIL": ("v", "tab:red")}
    for state, (m, c) in styles.items():
        d = df[(df.state == state) & df.params.notna() & df[y].notna()]
        if len(d):
            ax.scatter(d.params, d[y], marker=m, c=c, label=f"{state.lower()} ({len(d)})", alpha=0.8)
    front = pareto_front(df) if y == "val_acc" else df[:0]
    if len(front):
        ax.step(front.params, front.val_acc, where="post", c="tab:green", label="Pareto front")
    axes = [ax, strip] if len(rej) else [ax]
    if budget_params:
        for a in axes:
            a.axvline(budget_params, ls="--", c="k", lw=1, label=f"budget {budget_params:,} params" if a is ax else None)
    if len(rej):  # never trained: no accuracy to draw them at
        strip.scatter(rej.params, [0] * len(rej), marker="x", c="tab:orange", label=f"rejected ({len(rej)})")
        strip.set_yticks([])
        strip.set_ylabel("rejected\n(not trained)", rotation=0, ha="right", va="center", fontsize=8)
        strip.legend(fontsize=8, loc="upper left")
    axes[-1].set_xlabel("parameters")
    ax.set_ylabel("best validation accuracy" if y == "val_acc" else f"{y} (scored without training)")
    ax.set_title(f"study {study_name}")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def summary_line(study, df) -> str:
    max_epochs = study.user_attrs.get("archsearch.max_epochs")
    c = df.state.value_counts().to_dict() if len(df) else {}
    pruned = df[df.state == "PRUNED"]
    saved = int((max_epochs - pruned.epochs).clip(lower=0).sum()) if max_epochs and len(pruned) else 0
    ok = df[df.state == "COMPLETE"]
    if scored := score_column(study):  # scored without training: the leaderboard's order is the objective's
        v = ok.iloc[0][scored] if len(ok) else 0
        shown = f"{v:.2f}" if scored in TIMED else f"{int(v):,}"
        best = f"; best {scored} {shown} (trial {int(ok.iloc[0].trial)}) {ok.iloc[0].sampled}" if len(ok) else ""
        if len(ok) and len(study.directions) > 1:  # several objectives: no single best, a front
            first: dict[tuple, int] = {}  # a network sampled again is the same point: named by its first trial
            for t in sorted(study.best_trials, key=lambda t: t.number):
                first.setdefault(tuple(t.values), t.number)
            objs = " and ".join(f"{o} ({d.name.lower()})" for o, d in zip(scored_by(study).split(","), study.directions))
            best = f"; {len(first)} networks on the front of {objs}: trials {', '.join(map(str, sorted(first.values())))}"
        return (f"study {study.study_name}: {c.get('COMPLETE', 0)} scored without training, "
                f"{c.get('REJECTED', 0)} rejected by the budget{best}")
    best = ""
    if len(ok):
        b = ok.sort_values("val_acc", ascending=False).iloc[0]
        params = f", {int(b.params):,} params" if pd.notna(b.params) else ""
        best = f"; best val_acc {b.val_acc:.4f} (trial {int(b.trial)}{params}) {b.sampled}"
    trained = sum(c.get(s, 0) for s in TRAINED)
    return (f"study {study.study_name}: {trained} trained ({c.get('COMPLETE', 0)} complete, {c.get('PRUNED', 0)} "
            f"pruned, {c.get('FAIL', 0)} failed), {c.get('REJECTED', 0)} rejected before launch, "
            f"{c.get('INTERRUPTED', 0)} interrupted; epochs saved by pruning: {saved}{best}")


def fmt_cell(v) -> str:
    return "n/a" if v is None or v != v else f"{float(v):+.3f}"


def print_table(df, drop: Sequence[str] = ()) -> None:
    with pd.option_context("display.max_rows", 200, "display.width", 200, "display.max_colwidth", 60):
        print(df.drop(columns=list(drop)).to_string(index=False, float_format=lambda v: f"{v:.4f}", max_colwidth=70))


def _duration(v) -> str:
    """Seconds as ``m:ss`` (``1:05:03`` past an hour); empty when unknown."""
    if v is None or v != v:
        return ""
    m, sec = divmod(int(round(float(v))), 60)
    return f"{m // 60}:{m % 60:02d}:{sec:02d}" if m >= 60 else f"{m}:{sec:02d}"


def _count(v) -> str:
    return "" if v is None or v != v else f"{int(v):,}"


def print_leaderboard(df) -> None:
    """The leaderboard for a terminal: accuracies to 4 places, sizes with thousands separators, the epoch
    validation first reached 85% (``to_85%``), the duration as m:ss (``time``), and the sampled values
    last, in full (never cut)."""
    if not len(df):
        print("(no finished trials)")
        return
    view = pd.DataFrame({
        "trial": df.trial, "state": df.state,
        "val_acc": df.val_acc.map(lambda v: "" if v != v else f"{v:.4f}"),
        "test_acc": df.test_acc.map(lambda v: "" if v != v else f"{v:.4f}"),
        "params": df.params.map(_count), "rf": df.rf.map(_count), "macs": df.macs.map(_count),
        **({"ms/img": df.ms_per_image.map(lambda v: "" if v is None or v != v else f"{v:.2f}")}
           if df.ms_per_image.notna().any() else {}),
        "epochs": df.epochs, "to_85%": df.epoch_to_val85.map(_count), "time": df.duration_s.map(_duration)})
    lines = view.to_string(index=False).splitlines()
    width = max(len(x) for x in lines)
    print(lines[0].ljust(width) + "  sampled")
    for line, sampled in zip(lines[1:], df.sampled):
        print(line.ljust(width) + "  " + str(sampled))


def _timed_networks(df):
    """The COMPLETE trials with MACs and a time per image, one per network (its first trial)."""
    return df[(df.state == "COMPLETE") & df.macs.notna() & df.ms_per_image.notna()].drop_duplicates("sampled")


def time_front(df):
    """Rows not dominated in (more MACs, fewer ms per training image), among COMPLETE trials, one per network."""
    front, best = [], -1.0
    for i, r in _timed_networks(df).sort_values(["ms_per_image", "macs"], ascending=[True, False]).iterrows():
        if r.macs > best:
            front.append(i)
            best = r.macs
    return df.loc[front]


def time_figure(df, study_name: str):
    """A timed study's plot: MACs against the training time per image measured on the sweep's machine,
    the front (the most MACs for each time) as a step line."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ok = _timed_networks(df)
    ax.scatter(ok.ms_per_image, ok.macs / 1e6, c="tab:blue", alpha=0.8, label=f"timed ({len(ok)} networks)")
    front = time_front(df)
    if len(front):
        ax.step(front.ms_per_image, front.macs / 1e6, where="post", c="tab:green", label=f"front ({len(front)})")
        for _, r in front.iterrows():
            ax.annotate(str(int(r.trial)), (r.ms_per_image, r.macs / 1e6), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.set_xlabel("ms per training image, measured on the sweep's machine")
    ax.set_ylabel("MACs per image (millions)")
    ax.set_title(f"study {study_name}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
