"""Time to accuracy of a study's retrained runs: for each (trial, seed) that ``python -m
archsearch.retrain`` recorded, the epoch at which validation first reached 80%, 85% and 90% and
the wall minutes up to it (training and validation of every epoch so far: the MLflow metrics
``epoch_to_valNN`` / ``seconds_to_valNN`` each run logs), beside its final accuracies and its
whole wall time."""

from __future__ import annotations

import math

import pandas as pd

from archsearch.search.results import retrained
from archsearch.training.job import THRESHOLDS

__all__ = ["print_time_to_accuracy", "time_to_accuracy"]

_LEVELS = tuple(round(t * 100) for t in THRESHOLDS)
COLUMNS = ["trial", "seed", "epochs", "val_acc", "test_acc_single_view", "minutes",
           *[c for k in _LEVELS for c in (f"epoch_to_val{k}", f"min_to_val{k}")]]


def _num(v) -> float:
    return float(v) if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)) else float("nan")


def time_to_accuracy(study, runs: dict[str, dict[str, float]]) -> pd.DataFrame:
    """One row per retrained run, in trial then seed order. ``runs``: {MLflow run id: its metrics}
    (the tracker's ``child_metrics`` of the study's parent run); a threshold never reached is NaN."""
    rows = []
    for trial, seeds in sorted(retrained(study).items()):
        for seed, rec in sorted(seeds.items()):
            m = runs.get(rec.get("run_id") or "", {})
            row = {"trial": trial, "seed": seed, "epochs": rec.get("epochs"), "val_acc": _num(rec.get("val_acc")),
                   "test_acc_single_view": _num(rec.get("test_acc_single_view")),
                   "minutes": _num(rec.get("seconds")) / 60}
            for k in _LEVELS:
                row[f"epoch_to_val{k}"] = _num(m.get(f"epoch_to_val{k}"))
                row[f"min_to_val{k}"] = _num(m.get(f"seconds_to_val{k}")) / 60
            rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def _reached(epoch: float, minutes: float) -> str:
    if epoch != epoch:
        return "-"
    return f"epoch {int(epoch)}, {minutes:.1f} min" if minutes == minutes else f"epoch {int(epoch)}"


def print_time_to_accuracy(df: pd.DataFrame) -> None:
    """The table for a terminal: accuracies in %, each threshold as ``epoch 15, 17.3 min`` (``-``:
    validation never reached it), the run's whole wall time in minutes."""
    view = pd.DataFrame({
        "trial": df.trial, "seed": df.seed, "epochs": df.epochs,
        "val_acc": df.val_acc.map(lambda v: "" if v != v else f"{v:.2%}"),
        "test (1 view)": df.test_acc_single_view.map(lambda v: "" if v != v else f"{v:.2%}"),
        **{f"val {k}%": [_reached(e, m) for e, m in zip(df[f"epoch_to_val{k}"], df[f"min_to_val{k}"])]
           for k in _LEVELS},
        "wall": df.minutes.map(lambda v: "" if v != v else f"{v:.1f} min")})
    print(view.to_string(index=False))
