"""How well a cheap proxy ranks candidates: a study's trials beside their full-recipe retrains
(Kendall tau-b and Spearman rho against the full validation accuracy, for the proxy and for the
training-free params and MACs), what each proxy costs, and which proxy to choose.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from archsearch.config.compose import compose
from archsearch.errors import ConfigError
from archsearch.search.leaderboard import fmt_cell
from archsearch.search.results import (
    MIN_RANKED,
    mean_of,
    proxy_val_acc,
    retrained,
    score_order,
    scored_by,
)
from archsearch.search.study import TRAINED, override_key


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
               "full_val_acc": mean_of(r.get("val_acc") for r in recs.values()),
               "full_test_acc": mean_of(r.get("test_acc_single_view") for r in recs.values()), "seeds": len(recs)}
        for s in seeds:
            row[f"full_test_s{s}"] = mean_of([recs.get(s, {}).get("test_acc_single_view")])
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
    # scipy.stats takes a second to load: only a table with something to rank pays it
    from archsearch.search.rank import kendall_tau_b, spearman_rho

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
        tau, rho = (fmt_cell(r[k]) for k in ("kendall_tau_b", "spearman_rho"))
        lines.append(f"  proxy val_acc vs {label}: Kendall tau-b {tau}, Spearman rho {rho} (n={r['n']})")
    if r := agreement.get("proxy_val_acc_vs_ref_proxy_val_acc"):
        lines.append(f"  proxy val_acc vs the proxy val_acc of {agreement.get('full_from', 'the reference study')}: "
                     f"Kendall tau-b {fmt_cell(r['kendall_tau_b'])}, Spearman rho {fmt_cell(r['spearman_rho'])} (n={r['n']})")
    free = [f"{label} tau-b {fmt_cell(r['kendall_tau_b'])} rho {fmt_cell(r['spearman_rho'])} (n={r['n']})"
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
    n = int(df.n.max()) if len(df) else 0
    lines = ["\nwhich proxy: rank agreement with full-recipe val_acc over the retrained trials, cheapest first "
             "(images: training images x epochs a trial):"]
    for r in df.itertuples():
        imgs = "unknown" if pd.isna(r.images) else f"{int(r.images):,}"
        free = not pd.isna(r.images) and int(r.images) == 0
        wall = "" if pd.isna(r.median_s) or free else f", median {r.median_s:.0f} s a trial"
        lines.append(f"  {r.proxy}: {imgs} images{wall}; Kendall tau-b {fmt_cell(r.kendall_tau_b)}, "
                     f"Spearman rho {fmt_cell(r.spearman_rho)} (n={int(r.n)})")
    lines.append(f"  cheapest with tau-b >= {min_tau:g}: {pick} (n={n})" if pick else
                 f"  none reaches tau-b >= {min_tau:g} over these {n} retrained trials")
    return lines


def full_plot(table, png: Path, study_name: str, budget_params: int | None) -> Path:
    """The retrained trials' full-recipe single-view test accuracy (mean over seeds) against their
    parameters, each labelled with its trial number, and the budget line."""
    # (matplotlib when a plot is drawn, its file backend chosen before pyplot loads: see leaderboard)
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
