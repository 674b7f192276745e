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
written to ``proxy_vs_full.csv`` and the ``rank`` entry of ``summary.json``.

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
import math
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from archsearch.study import TRAINED

__all__ = ["base_dir", "leaderboard", "load_named", "main", "open_study", "pareto_front", "print_table",
           "proxies_agreement", "proxy_choice", "proxy_cost", "proxy_val_acc", "proxy_vs_full", "rank_agreement",
           "rank_lines", "retrained", "score_column", "score_order", "scored_by", "summary_line", "write_outputs"]

COLUMNS = ["trial", "state", "val_acc", "test_acc", "params", "rf", "macs", "epochs", "duration_s", "sampled",
           "note", "run_id"]


def scored_by(study) -> str:
    """The objective(s) a sweep scored its trials by without training them (``"macs"``, ...), or ''
    for a study of trained trials."""
    return str(study.user_attrs.get("archsearch.scored") or "")


def score_column(study) -> str:
    """The leaderboard column holding a scored study's (first) objective, e.g. ``macs``; '' for a
    study of trained trials (its column is ``val_acc``)."""
    first = scored_by(study).split(",")[0]
    return first if first in COLUMNS else ""


def score_order(study) -> tuple[str, bool]:
    """(column, best is highest) a scored study's trials rank by; ('', True) for trained trials."""
    col = score_column(study)
    return col, (not col) or study.directions[0].name == "MAXIMIZE"


def leaderboard(study, tracker=None, parent_run_id: str | None = None):
    """One row per finished trial, best validation accuracy first (a study scored without training:
    best objective first; its val_acc is empty)."""
    import pandas as pd
    from optuna.trial import TrialState

    test_acc: dict[str, float] = {}
    if tracker is not None and parent_run_id:
        runs = tracker.client.search_runs([tracker.experiment_id],
                                          filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
                                          max_results=5000)
        test_acc = {r.info.run_id: r.data.metrics.get("test_acc", float("nan")) for r in runs}
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
            "trial": t.number, "state": state, "val_acc": val, "test_acc": test_acc.get(rid, float("nan")),
            "params": t.user_attrs.get("model.params"), "rf": t.user_attrs.get("model.rf"),
            "macs": t.user_attrs.get("model.macs"), "epochs": len(iv), "duration_s": round(dur, 1),
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
    objective, e.g. ``macs``) against parameters, the budget line, the rejected candidates."""
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
        d = df[(df.state == state) & df.params.notna() & df[y].notna()]
        if len(d):
            ax.scatter(d.params, d[y], marker=m, c=c, label=f"{state.lower()} ({len(d)})", alpha=0.8)
    rej = df[(df.state == "REJECTED") & df.params.notna()]
    if len(rej):
        ymin = df[y].min() if df[y].notna().any() else 0.0
        ax.scatter(rej.params, [ymin] * len(rej), marker="x", c="tab:orange", label=f"rejected ({len(rej)})")
    front = pareto_front(df) if y == "val_acc" else df[:0]
    if len(front):
        ax.step(front.params, front.val_acc, where="post", c="tab:green", label="Pareto front")
    if budget_params:
        ax.axvline(budget_params, ls="--", c="k", lw=1, label=f"budget {budget_params:,} params")
    ax.set_xlabel("parameters")
    ax.set_ylabel("best validation accuracy" if y == "val_acc" else f"{y} (scored without training)")
    ax.set_title(f"study {study_name}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = out / "pareto.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return [csv, png]


def summary_line(study, df) -> str:
    import pandas as pd

    max_epochs = study.user_attrs.get("archsearch.max_epochs")
    c = df.state.value_counts().to_dict() if len(df) else {}
    pruned = df[df.state == "PRUNED"]
    saved = int((max_epochs - pruned.epochs).clip(lower=0).sum()) if max_epochs and len(pruned) else 0
    ok = df[df.state == "COMPLETE"]
    if scored := score_column(study):  # scored without training: the leaderboard's order is the objective's
        best = f"; best {scored} {int(ok.iloc[0][scored]):,} (trial {int(ok.iloc[0].trial)}) {ok.iloc[0].sampled}" \
            if len(ok) else ""
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


# ------------------------------------------------------------------ finding the study
def base_dir() -> Path:
    """Where ``mlruns/`` (MLflow, the default journal storage) and ``outputs/`` live:
    ``$ARCHSEARCH_BASE`` or the working directory, as for the sweeper and the training job."""
    return Path(os.environ.get("ARCHSEARCH_BASE", os.getcwd()))


def open_study(overrides: Sequence[str]):
    """``sweep=NAME`` (and any overrides, ``hydra.sweeper.study_name`` / ``storage`` included)
    -> (the composed config with its hydra node, the Optuna study, its storage URL).
    No sweep named, or no such study: ConfigError (one line)."""
    from archsearch.config import compose_with_hydra
    from archsearch.errors import ConfigError

    cfg = compose_with_hydra("config", list(overrides))
    sw = cfg.hydra.sweeper
    name = sw.get("study_name") or cfg.hydra.runtime.choices.get("sweep")
    if not name:
        raise ConfigError("sweep: name a sweep (sweep=arch_dilated) or hydra.sweeper.study_name=NAME")
    study, url = load_named(cfg, str(name))
    return cfg, study, url


def load_named(cfg, name: str, field_name: str = "sweep"):
    """The study ``name`` in the storage the composed sweep config ``cfg`` points at -> (study,
    storage URL); none there: ConfigError naming ``field_name``."""
    import optuna

    from archsearch.errors import ConfigError
    from archsearch.study import open_storage, storage_url

    url = storage_url(cfg.hydra.sweeper.get("storage"), name, base_dir())
    hint = {"sweep": f"run it first: python -m archsearch.train -m sweep={name}",
            "proxies": "name studies swept over the same candidates (the same sampler seed) under other proxies",
            }.get(field_name, "name the study whose trials python -m archsearch.retrain trained")
    missing = ConfigError(f"{field_name}: no study {name!r} in {url}; {hint}")
    if url.startswith("journal:") and not Path(url[len("journal:"):]).is_file():
        raise missing  # (opening it would leave an empty journal file behind)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(url))
    except KeyError:
        raise missing from None
    return study, url


# ------------------------------------------------------------------ proxy vs full recipe
MIN_RANKED = 3  # retrained trials needed before a rank correlation means anything
_RETRAIN_KEY = re.compile(r"retrain\.t(\d+)\.s(\d+)$")


def retrained(study) -> dict[int, dict[int, dict]]:
    """``{trial: {seed: record}}`` from the study's ``retrain.t<trial>.s<seed>`` attributes."""
    out: dict[int, dict[int, dict]] = {}
    for key, rec in study.user_attrs.items():
        m = _RETRAIN_KEY.match(key)
        if m and isinstance(rec, dict):
            out.setdefault(int(m[1]), {})[int(m[2])] = rec
    return out


def _mean(values) -> float:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(vals) / len(vals) if vals else float("nan")


def proxy_val_acc(trial) -> float:
    """The trial's objective in the sweep (its best validation accuracy under the proxy recipe);
    nan for a trial scored without training (its score is the MACs or params column)."""
    if trial is None or not trial.values or trial.user_attrs.get("scored"):
        return float("nan")
    return float(trial.values[0])


def _same_candidates(study, full_study) -> dict[int, int]:
    """``{trial of study: trial of full_study}`` for the trials of both with the same sampled
    values (the same sampler seed draws the same candidates whatever the proxy)."""
    def key(t) -> str:
        return json.dumps(t.params, sort_keys=True, default=str)

    theirs: dict[str, int] = {}
    for t in full_study.get_trials(deepcopy=False):
        theirs.setdefault(key(t), t.number)
    return {t.number: theirs[key(t)] for t in study.get_trials(deepcopy=False) if t.values and key(t) in theirs}


def proxies_agreement(study, other) -> dict:
    """Kendall's tau-b and Spearman's rho between two studies' proxy accuracies over every
    candidate both trained (matched by sampled values): how repeatable a proxy is (another seed)
    or how two proxies agree, retrained or not."""
    import pandas as pd

    mine = {t.number: t for t in study.get_trials(deepcopy=False)}
    theirs = {t.number: t for t in other.get_trials(deepcopy=False)}
    d = pd.DataFrame([{"a": proxy_val_acc(mine[m]), "b": proxy_val_acc(theirs[o])}
                      for m, o in _same_candidates(study, other).items()], columns=["a", "b"])
    return _agreement(d, "a", "b")


def proxy_vs_full(study, trials: Sequence[int] | None = None, full_study=None):
    """One row per retrained trial (or those of ``trials``): params, RF, MACs, the proxy's
    validation accuracy, the full recipe's validation accuracy (mean over seeds) and single-view
    test accuracy per seed and their mean; best proxy first (a study scored without training has
    no proxy accuracy: best score first).

    ``full_study``: the full-recipe records come from that study instead (e.g. the same
    candidates swept under another proxy or seed and retrained there), matched to this study's
    trials by their sampled values; the table adds that study's trial and proxy accuracy
    (``ref_trial``, ``ref_proxy_val_acc``)."""
    import pandas as pd

    source = study if full_study is None else full_study
    runs = retrained(source)
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    ref_number = {t.number: t for t in source.get_trials(deepcopy=False)}
    pairs = ({n: n for n in runs} if full_study is None else
             {mine: ref for mine, ref in _same_candidates(study, full_study).items() if ref in runs})
    seeds = sorted({s for ref in pairs.values() for s in runs[ref]})
    cols = ["trial", *(["ref_trial"] if full_study is not None else []), "params", "rf", "macs", "proxy_val_acc",
            *(["ref_proxy_val_acc"] if full_study is not None else []), "full_val_acc",
            *[f"full_test_s{s}" for s in seeds], "full_test_acc", "seeds"]
    rows = []
    for n, ref in sorted(pairs.items()):
        if trials is not None and n not in trials:
            continue
        recs = runs[ref]
        first = recs[min(recs)]
        trial = by_number.get(n)
        row = {"trial": n, "ref_trial": ref, "params": first.get("params"), "rf": first.get("rf"),
               "macs": trial.user_attrs.get("model.macs") if trial is not None else None,
               "proxy_val_acc": proxy_val_acc(trial), "ref_proxy_val_acc": proxy_val_acc(ref_number.get(ref)),
               "full_val_acc": _mean(r.get("val_acc") for r in recs.values()),
               "full_test_acc": _mean(r.get("test_acc_single_view") for r in recs.values()), "seeds": len(recs)}
        for s in seeds:
            row[f"full_test_s{s}"] = _mean([recs.get(s, {}).get("test_acc_single_view")])
        rows.append(row)
    df = pd.DataFrame(rows, columns=cols)  # (a column not in cols, e.g. ref_trial of a study's own records: dropped)
    for c in ("params", "rf", "macs", *(["ref_trial"] if full_study is not None else [])):
        df[c] = df[c].astype("Int64")
    col, high = score_order(study)
    if full_study is None and col:  # scored without training: no proxy accuracy
        return df.drop(columns=["proxy_val_acc"]).sort_values(col, ascending=not high, na_position="last") \
            .reset_index(drop=True)
    return df.sort_values("proxy_val_acc", ascending=False, na_position="last").reset_index(drop=True)


RANKED = (("full_val_acc", "full-recipe val_acc (mean over seeds)"),
          ("full_test_acc", "full-recipe single-view test_acc (mean over seeds)"))
FREE = (("params", "params"), ("macs", "MACs"))  # proxies that need no training, ranked against full_val_acc


def _agreement(d, x_col: str, y_col: str) -> dict:
    from archsearch.rank import kendall_tau_b, spearman_rho

    d = d[d[x_col].notna() & d[y_col].notna()]
    x, y = [float(v) for v in d[x_col]], [float(v) for v in d[y_col]]
    tau, rho = kendall_tau_b(x, y), spearman_rho(x, y)
    return {"n": len(d), "kendall_tau_b": None if math.isnan(tau) else tau,
            "spearman_rho": None if math.isnan(rho) else rho}


def rank_agreement(table) -> dict:
    """Kendall's tau-b and Spearman's rho between the proxy's validation accuracy and each of
    the full recipe's accuracies (``RANKED``), over the rows of :func:`proxy_vs_full`; and, under
    ``free``, between the no-training proxies (``FREE``) and the full recipe's validation accuracy."""
    full = table[table.full_val_acc.notna()]
    ok = full[full.proxy_val_acc.notna()] if "proxy_val_acc" in full else full.iloc[:0]
    out: dict = {"n_trials": len(ok)}
    if len(full) and not len(ok):  # trials scored without training: their proxy is one of FREE
        out["n_trials"] = len(full)
        out["scored"] = True
    if out["n_trials"] < MIN_RANKED:
        out["note"] = f"needs >= {MIN_RANKED} retrained trials, has {out['n_trials']}"
        return out
    if len(ok):
        for col, _ in RANKED:
            out[f"proxy_val_acc_vs_{col}"] = _agreement(ok, "proxy_val_acc", col)
        if "ref_proxy_val_acc" in ok:  # this proxy against the reference study's (another proxy, or another seed)
            out["proxy_val_acc_vs_ref_proxy_val_acc"] = _agreement(ok, "proxy_val_acc", "ref_proxy_val_acc")
    out["free"] = {col: _agreement(full if out.get("scored") else ok, col, "full_val_acc") for col, _ in FREE
                   if col in ok}
    return out


def rank_lines(agreement: dict) -> list[str]:
    if "note" in agreement:
        return [f"rank agreement of proxy and full recipe: {agreement['note']} (python -m archsearch.retrain)"]
    lines = [f"rank agreement of proxy and full recipe over {agreement['n_trials']} retrained trials:"]
    if agreement.get("scored"):
        lines.append("  the trials were scored without training: their proxy is the no-training row below")
    for col, label in RANKED:
        if (r := agreement.get(f"proxy_val_acc_vs_{col}")) is None:
            continue
        tau, rho = (_fmt(r[k]) for k in ("kendall_tau_b", "spearman_rho"))
        lines.append(f"  proxy val_acc vs {label}: Kendall tau-b {tau}, Spearman rho {rho} (n={r['n']})")
    if r := agreement.get("proxy_val_acc_vs_ref_proxy_val_acc"):
        lines.append(f"  proxy val_acc vs the proxy val_acc of {agreement.get('full_from', 'the reference study')}: "
                     f"Kendall tau-b {_fmt(r['kendall_tau_b'])}, Spearman rho {_fmt(r['spearman_rho'])} (n={r['n']})")
    free = [f"{label} tau-b {_fmt(r['kendall_tau_b'])} rho {_fmt(r['spearman_rho'])} (n={r['n']})"
            for col, label in FREE if (r := agreement.get("free", {}).get(col)) and r["n"]]
    if free:
        lines.append(("  " if agreement.get("scored") else "  for comparison, ")
                     + "no-training proxies vs full-recipe val_acc: " + "; ".join(free))
    return lines


def proxy_cost(study) -> dict:
    """What one trial of the study's proxy costs: the training images and epochs its sweep command
    set (recomposed from the study's recorded overrides; ``train_images`` None means all of them),
    and the wall time of its trained trials (median, min, max; wall time includes any time the
    machine was shared or the trial paused)."""
    import statistics

    from archsearch.config import compose
    from archsearch.errors import ConfigError
    from archsearch.retrain import override_key

    out: dict = {"train_images": None, "epochs": None}
    if scored := scored_by(study):
        return {**out, "train_images": 0, "epochs": 0, "scored": scored}
    recorded = study.user_attrs.get("archsearch.base_overrides")
    try:
        if recorded is None:
            raise ConfigError("not recorded")
        cfg = compose("config", [str(o) for o in recorded  # (a user's model directory: hydra.searchpath kept)
                                 if not override_key(str(o)).startswith("hydra.") or override_key(str(o)) == "hydra.searchpath"])
        out["train_images"] = cfg.data.get("limit_train")
        out["epochs"] = int(study.user_attrs.get("archsearch.max_epochs") or cfg.trainer.epochs)
    except ConfigError:
        out["note"] = "the sweep's data and epochs are unknown (its command could not be recomposed)"
    secs = [(t.datetime_complete - t.datetime_start).total_seconds() for t in study.get_trials(deepcopy=False)
            if (t.user_attrs.get("state") or t.state.name) in TRAINED and t.datetime_complete and t.datetime_start]
    out["trials"] = len(secs)
    if secs:
        out.update(median_s=round(statistics.median(secs), 1), min_s=round(min(secs), 1), max_s=round(max(secs), 1))
    return out


def cost_line(study_name: str, cost: dict) -> str:
    if cost.get("scored"):
        return f"  cost of the {study_name} proxy: no training (scored by {cost['scored']} from the analysis)"
    imgs = cost.get("train_images")
    data = f"{int(imgs):,} training images" if imgs else "all training images"
    line = f"  cost of the {study_name} proxy: " + (cost["note"] if "note" in cost else
                                                  f"up to {cost['epochs']} epochs on {data} a trial")
    if imgs and cost.get("epochs"):
        line += f" ({int(imgs) * int(cost['epochs']):,} images)"
    if cost.get("trials"):
        line += (f"; wall time a trained trial: median {cost['median_s']:.0f} s ({cost['min_s']:.0f}-"
                 f"{cost['max_s']:.0f} s, {cost['trials']} trials)")
    return line


MIN_TAU = 0.6  # the rank agreement a proxy must reach to be worth its cost


def proxy_choice(ref, studies: Sequence, min_tau: float = MIN_TAU):
    """Which proxy to use: one row per proxy that could rank the candidates ``ref`` retrained
    (the no-training ones, the parameter count and the MACs; the proxy of ``ref`` itself and of
    each of ``studies``, the same candidates swept under other proxies), with what a trial costs
    (training images x epochs, median wall time) and its Kendall tau-b / Spearman rho against the
    full recipe's validation accuracy; cheapest first. -> (table, the cheapest row's proxy with
    tau-b >= ``min_tau``, or None)."""
    import pandas as pd

    rows = []
    seen = set()
    for st in [ref, *studies]:
        if st.study_name in seen:
            continue
        seen.add(st.study_name)
        agreement = rank_agreement(proxy_vs_full(st, full_study=None if st is ref else ref))
        if st is ref:  # the no-training proxies, over the same retrained trials
            for col, label in FREE:
                r = agreement.get("free", {}).get(col) or {}
                rows.append({"proxy": f"{label} (no training)", "images": 0, "median_s": 0.0,
                             "kendall_tau_b": r.get("kendall_tau_b"), "spearman_rho": r.get("spearman_rho"),
                             "n": r.get("n", 0)})
        if scored_by(st):  # scored without training: its proxy is the no-training rows above
            continue
        r = agreement.get("proxy_val_acc_vs_full_val_acc") or {}
        cost = proxy_cost(st)
        imgs, epochs = cost.get("train_images"), cost.get("epochs")
        rows.append({"proxy": st.study_name,
                     "images": int(imgs) * int(epochs) if imgs and epochs else None,
                     "median_s": cost.get("median_s"),
                     "kendall_tau_b": r.get("kendall_tau_b"), "spearman_rho": r.get("spearman_rho"),
                     "n": r.get("n", agreement.get("n_trials", 0))})
    df = pd.DataFrame(rows, columns=["proxy", "images", "median_s", "kendall_tau_b", "spearman_rho", "n"])
    df["images"] = df["images"].astype("Int64")
    order = df.assign(_i=df["images"].astype("Float64").fillna(float("inf")),
                      _s=df["median_s"].astype("Float64").fillna(float("inf")))
    df = df.loc[order.sort_values(["_i", "_s"], kind="stable").index].reset_index(drop=True)
    ok = df[df.kendall_tau_b.notna() & (df.kendall_tau_b.astype(float) >= min_tau) & (df.n >= MIN_RANKED)]
    return df, (ok.iloc[0]["proxy"] if len(ok) else None)


def choice_lines(df, pick: str | None, min_tau: float) -> list[str]:
    import pandas as pd

    n = int(df.n.max()) if len(df) else 0
    lines = ["\nwhich proxy: rank agreement with full-recipe val_acc over the retrained trials, cheapest first "
             "(images: training images x epochs a trial):"]
    for r in df.itertuples():
        imgs = "unknown" if pd.isna(r.images) else f"{int(r.images):,}"
        free = not pd.isna(r.images) and int(r.images) == 0
        wall = "" if pd.isna(r.median_s) or free else f", median {r.median_s:.0f} s a trial"
        lines.append(f"  {r.proxy}: {imgs} images{wall}; Kendall tau-b {_fmt(r.kendall_tau_b)}, "
                     f"Spearman rho {_fmt(r.spearman_rho)} (n={int(r.n)})")
    lines.append(f"  cheapest with tau-b >= {min_tau:g}: {pick} (n={n})" if pick else
                 f"  none reaches tau-b >= {min_tau:g} over these {n} retrained trials")
    return lines


def _fmt(v) -> str:
    return "n/a" if v is None or v != v else f"{float(v):+.3f}"


def print_table(df, drop: Sequence[str] = ()) -> None:
    import pandas as pd

    with pd.option_context("display.max_rows", 200, "display.width", 200, "display.max_colwidth", 60):
        print(df.drop(columns=list(drop)).to_string(index=False, float_format=lambda v: f"{v:.4f}", max_colwidth=70))


def _report_retrained(study, out: Path, summary: dict, full_study=None,
                      budget_params: int | None = 200_000) -> list[Path]:
    """Print and write the proxy-vs-full table and the rank agreement, if any trial was retrained
    (in ``full_study``, if given: see :func:`proxy_vs_full`)."""
    table = proxy_vs_full(study, full_study=full_study)
    both = proxies_agreement(study, full_study) if full_study is not None else None
    if both is not None:
        tau, rho = _fmt(both["kendall_tau_b"]), _fmt(both["spearman_rho"])
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


def full_plot(table, png: Path, study_name: str, budget_params: int | None) -> Path:
    """The retrained trials' full-recipe single-view test accuracy (mean over seeds) against their
    parameters, each labelled with its trial number, and the budget line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = table[table.full_test_acc.notna() & table.params.notna()]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter(d.params.astype(float), d.full_test_acc, c="tab:blue", label=f"retrained ({len(d)})")
    for r in d.itertuples():
        ax.annotate(f"t{int(r.trial)}", (float(r.params), r.full_test_acc), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    if budget_params:
        ax.axvline(budget_params, ls="--", c="k", lw=1, label=f"budget {budget_params:,} params")
    ax.set_xlabel("parameters")
    ax.set_ylabel("full-recipe test accuracy, single view (mean over seeds)")
    ax.set_title(f"study {study_name}: retrained trials")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


def _min_tau(value: str | None) -> float:
    from archsearch.errors import ConfigError

    if value is None:
        return MIN_TAU
    try:
        v = float(value)
    except ValueError:
        v = float("nan")
    if not -1.0 <= v <= 1.0:
        raise ConfigError(f"min_tau: must be a number from -1 to 1; got {value!r}")
    return v


def main(argv: Sequence[str] | None = None) -> int:
    from omegaconf import OmegaConf

    from archsearch.errors import ConfigError
    from archsearch.retrain import split_args
    from archsearch.tracking import make_tracker

    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return 0
    mine, rest = split_args(argv, ("full_from", "proxies", "min_tau"))
    try:
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
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    name, base = study.study_name, base_dir()
    tracker = make_tracker(OmegaConf.to_container(cfg.tracking, resolve=True), base)
    parent = study.user_attrs.get("mlflow_parent_run_id") if tracker.enabled else None
    df = leaderboard(study, tracker if tracker.enabled else None, parent)
    out = base / "outputs" / "reports" / name
    files = write_outputs(df, out, name, OmegaConf.select(cfg, "budget.max_params"),
                          y=score_column(study) or "val_acc")
    print_table(df, drop=["run_id", "note"])
    line = summary_line(study, df)
    print(line)
    summary: dict = {"study": name, "storage": url, "summary": line, "rank": None}
    files += _report_retrained(study, out, summary, full_study, OmegaConf.select(cfg, "budget.max_params"))
    if others is not None:
        table, pick = proxy_choice(full_study or study, [study, *others], min_tau)
        for line in choice_lines(table, pick, min_tau):
            print(line)
        summary["proxy_choice"] = {"min_tau": min_tau, "pick": pick,
                                   "proxies": json.loads(table.to_json(orient="records"))}
        table.to_csv(out / "proxy_choice.csv", index=False)
        files.append(out / "proxy_choice.csv")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    files.append(out / "summary.json")
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


if __name__ == "__main__":
    from archsearch import cli

    cli.run(main)
