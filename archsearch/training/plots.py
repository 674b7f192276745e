"""The pictures a run leaves as MLflow artifacts: the model's diagram, learning curves, the
confusion matrix and the misclassified test images."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from archsearch.files import write_whole
from archsearch.grammar.analysis import Analysis
from archsearch.grammar.budget import Budget, check
from archsearch.grammar.diagram import render
from archsearch.training.augment import save_grid

__all__ = ["write_diagram", "write_plots"]


def write_diagram(out: Path, analysis: Analysis, budget: Budget) -> Path:
    """``model_diagram.svg`` in ``out``: the picture ``python -m archsearch.validate format=svg``
    draws (layers and blocks, output shapes, the receptive field against the budget); -> its path."""
    return write_whole(out / "model_diagram.svg", render(analysis, budget, check(analysis, budget), "svg"))


def write_plots(out: Path, history, classes, y_true, y_pred, x_test, max_wrong: int = 32) -> list[Path]:
    """curves.png, confusion_matrix.png and misclassified.png in ``out``; -> their paths.
    Drawn with PIL: a few milliseconds, which a sweep pays once per trial."""
    files = []
    if history:
        files.append(_curves_png(history, out / "curves.png"))
    if y_pred is not None:
        k = len(classes)
        cm = np.zeros((k, k), np.int64)
        np.add.at(cm, (y_true, y_pred), 1)
        files.append(_confusion_png(cm, classes, out / "confusion_matrix.png"))
        wrong = np.nonzero(y_true != y_pred)[0][:max_wrong]
        if len(wrong):
            labels = [f"{classes[y_pred[i]]}/{classes[y_true[i]]}" for i in wrong]
            files.append(Path(save_grid(x_test[wrong], str(out / "misclassified.png"), labels)))
    return files


_SERIES = (("train", (31, 119, 180)), ("val", (255, 127, 14)))


def _curves_png(history, path: Path, w: int = 420, h: int = 300) -> Path:
    """Loss and accuracy per epoch, train and val, side by side."""
    img = Image.new("RGB", (2 * w, h), "white")
    d = ImageDraw.Draw(img)
    epochs = [r["epoch"] for r in history]
    for i, what in enumerate(("loss", "acc")):
        series = {name: [r[f"{name}_{what}"] for r in history] for name, _ in _SERIES}
        _panel(d, i * w, w, h, "loss" if what == "loss" else "accuracy", epochs, series, legend_low=what == "acc")
    img.save(path)
    return path


def _panel(d, x0: int, w: int, h: int, title: str, epochs: list[int], series: dict[str, list[float]],
           legend_low: bool = False) -> None:
    left, right, top, bottom = x0 + 52, x0 + w - 12, 24, h - 30
    vals = [v for vs in series.values() for v in vs if math.isfinite(v)] or [0.0, 1.0]
    lo, hi = min(vals), max(vals)
    hi = hi if hi > lo else lo + 1.0
    e0, e1 = epochs[0], max(epochs[-1], epochs[0] + 1)

    def xy(e, v):
        v = min(max(v, lo), hi) if math.isfinite(v) else hi
        return (left + (right - left) * (e - e0) / (e1 - e0), bottom - (bottom - top) * (v - lo) / (hi - lo))

    d.rectangle([left, top, right, bottom], outline=(160, 160, 160))
    d.text((x0 + w // 2 - 20, 6), title, fill="black")
    for v in (lo, (lo + hi) / 2, hi):
        y = xy(e0, v)[1]
        d.line([left - 4, y, left, y], fill=(160, 160, 160))
        d.text((x0 + 4, y - 6), f"{v:.3g}", fill="black")
    d.text((left, bottom + 8), f"epoch {e0}", fill="black")
    d.text((right - 60, bottom + 8), f"epoch {epochs[-1]}", fill="black")
    for k, (name, colour) in enumerate(_SERIES):
        pts = [xy(e, v) for e, v in zip(epochs, series[name])]
        if len(pts) > 1:
            d.line(pts, fill=colour, width=2)
        for px, py in pts:
            d.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour)
        d.text((right - 50, (bottom - 34 if legend_low else top + 6) + 14 * k), name, fill=colour)


def _confusion_png(cm, classes, path: Path, cell: int = 34) -> Path:
    """Confusion matrix (rows true, columns predicted) as a PNG, drawn with PIL (milliseconds)."""
    k = len(classes)
    left, top = 78, 78
    img = Image.new("RGB", (left + k * cell + 8, top + k * cell + 8), "white")
    d = ImageDraw.Draw(img)
    peak = max(int(cm.max()), 1)
    for i in range(k):
        d.text((4, top + i * cell + cell // 2 - 5), str(classes[i])[:12], fill="black")
        col = Image.new("RGB", (70, 12), "white")
        ImageDraw.Draw(col).text((0, 0), str(classes[i])[:12], fill="black")
        img.paste(col.rotate(90, expand=True), (left + i * cell + cell // 2 - 6, 4))
        for j in range(k):
            v = int(cm[i, j])
            shade = int(255 * (1 - 0.85 * v / peak))
            x0, y0 = left + j * cell, top + i * cell
            d.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=(shade, shade, 255), outline=(220, 220, 220))
            d.text((x0 + 3, y0 + cell // 2 - 5), str(v), fill="white" if shade < 128 else "black")
    d.text((4, 4), "rows: true", fill="gray")
    d.text((4, 18), "cols: predicted", fill="gray")
    img.save(path)
    return path
