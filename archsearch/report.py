"""``python -m archsearch.report sweep=NAME``: a study's leaderboard and accuracy-vs-params plot.

Reads the Optuna study (states, objective values, sampled parameters, epochs reported)
and its MLflow child runs (test accuracy) into pandas; prints the leaderboard and writes
``leaderboard.csv`` and ``pareto.png`` (accuracy vs parameters, the Pareto front and the
budget's parameter line) to ``outputs/reports/<study>/``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .study import TRAINED

__all__ = ["leaderboard", "main", "pareto_front", "summary_line", "write_outputs"]

COLUMNS = ["trial", "state", "val_acc", "test_acc", "params", "rf", "macs", "epochs", "duration_s", "sampled",
           "note", "run_id"]


def leaderboard(study, tracker=None, parent_run_id: str | None = None):
    """One row per finished trial, best validation accuracy first."""
    import pandas as pd
    from optuna.trial import TrialState

    test_acc: dict[str, float] = {}
    if tracker is not None and parent_run_id:
        runs = tracker.client.search_runs([tracker.experiment_id],
                                          filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
                                          max_results=5000)
        test_acc = {r.info.run_id: r.data.metrics.get("test_acc") for r in runs}
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.RUNNING or t.state == TrialState.WAITING:
            continue
        state = t.user_attrs.get("state") or t.state.name
        iv = t.intermediate_values
        if state == "COMPLETE" and t.values:
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
            "trial": t.number, "state": state, "val_acc": val, "test_acc": test_acc.get(rid, float("nan")),
            "params": t.user_attrs.get("model.params"), "rf": t.user_attrs.get("model.rf"),
            "macs": t.user_attrs.get("model.macs"), "epochs": len(iv), "duration_s": round(dur, 1),
            "sampled": json.dumps(t.params, sort_keys=True), "note": note, "run_id": rid,
        })
    df = pd.DataFrame(rows, columns=COLUMNS)
    order = {"COMPLETE": 0, "PRUNED": 1, "FAIL": 2, "INTERRUPTED": 3, "REJECTED": 4}
    if len(df):
        df["_o"] = df.state.map(order).fillna(9)
        df = df.sort_values(["_o", "val_acc"], ascending=[True, False]).drop(columns="_o").reset_index(drop=True)
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


def write_outputs(df, out_dir: str | Path, study_name: str, budget_params: int | None = 200_000) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv = out / "leaderboard.csv"
    df.to_csv(csv, index=False)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"COMPLETE": ("o", "tab:blue"), "PRUNED": ("s", "tab:gray"), "FAIL": ("v", "tab:red")}
    for state, (m, c) in styles.items():
        d = df[(df.state == state) & df.params.notna() & df.val_acc.notna()]
        if len(d):
            ax.scatter(d.params, d.val_acc, marker=m, c=c, label=f"{state.lower()} ({len(d)})", alpha=0.8)
    rej = df[(df.state == "REJECTED") & df.params.notna()]
    if len(rej):
        ymin = df.val_acc.min() if df.val_acc.notna().any() else 0.0
        ax.scatter(rej.params, [ymin] * len(rej), marker="x", c="tab:orange", label=f"rejected ({len(rej)})")
    front = pareto_front(df)
    if len(front):
        ax.step(front.params, front.val_acc, where="post", c="tab:green", label="Pareto front")
    if budget_params:
        ax.axvline(budget_params, ls="--", c="k", lw=1, label=f"budget {budget_params:,} params")
    ax.set_xlabel("parameters")
    ax.set_ylabel("best validation accuracy")
    ax.set_title(f"study {study_name}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = out / "pareto.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return [csv, png]


def summary_line(study, df) -> str:
    max_epochs = study.user_attrs.get("archsearch.max_epochs")
    c = df.state.value_counts().to_dict() if len(df) else {}
    pruned = df[df.state == "PRUNED"]
    saved = int((max_epochs - pruned.epochs).clip(lower=0).sum()) if max_epochs and len(pruned) else 0
    ok = df[df.state == "COMPLETE"]
    best = ""
    if len(ok):
        b = ok.sort_values("val_acc", ascending=False).iloc[0]
        best = f"; best val_acc {b.val_acc:.4f} (trial {int(b.trial)}, {int(b.params):,} params) {b.sampled}"
    trained = sum(c.get(s, 0) for s in TRAINED)
    return (f"study {study.study_name}: {trained} trained ({c.get('COMPLETE', 0)} complete, {c.get('PRUNED', 0)} "
            f"pruned, {c.get('FAIL', 0)} failed), {c.get('REJECTED', 0)} rejected before launch, "
            f"{c.get('INTERRUPTED', 0)} interrupted; epochs saved by pruning: {saved}{best}")


def main(argv: Sequence[str] | None = None) -> int:
    import optuna
    import pandas as pd
    from omegaconf import OmegaConf

    from .config import ConfigError, compose_with_hydra
    from .study import open_storage, storage_url
    from .tracking import make_tracker

    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return 0
    try:
        cfg = compose_with_hydra("config", argv)
        sw = cfg.hydra.sweeper
        name = sw.get("study_name") or cfg.hydra.runtime.choices.get("sweep")
        if not name:
            raise ConfigError("sweep: name a sweep (sweep=arch_dilated) or hydra.sweeper.study_name=NAME")
        base = Path.cwd()
        url = storage_url(sw.get("storage"), str(name), base)
        try:
            study = optuna.load_study(study_name=str(name), storage=open_storage(url))
        except KeyError:
            raise ConfigError(f"sweep: no study {name!r} in {url}; run it first: "
                              f"python -m archsearch.train -m sweep={name}") from None
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    tracker = make_tracker(OmegaConf.to_container(cfg.tracking, resolve=True), base)
    parent = study.user_attrs.get("mlflow_parent_run_id") if tracker.enabled else None
    df = leaderboard(study, tracker if tracker.enabled else None, parent)
    files = write_outputs(df, base / "outputs" / "reports" / str(name), str(name),
                          OmegaConf.select(cfg, "budget.max_params"))
    with pd.option_context("display.max_rows", 200, "display.width", 200, "display.max_colwidth", 60):
        print(df.drop(columns=["run_id", "note"]).to_string(index=False, float_format=lambda v: f"{v:.4f}",
                                                           max_colwidth=70))
    print(summary_line(study, df))
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
