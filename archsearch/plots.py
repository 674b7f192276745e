"""The pictures a run leaves as MLflow artifacts: learning curves, the confusion matrix and
the misclassified test images."""

from __future__ import annotations

from pathlib import Path

__all__ = ["write_plots"]

def write_plots(out: Path, history, classes, y_true, y_pred, x_test, max_wrong: int = 32) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from .augment import save_grid

    files = []
    if history:
        ep = [h["epoch"] for h in history]
        fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
        ax[0].plot(ep, [h["train_loss"] for h in history], label="train")
        ax[0].plot(ep, [h["val_loss"] for h in history], label="val")
        ax[0].set_title("loss"); ax[0].set_xlabel("epoch"); ax[0].legend()
        ax[1].plot(ep, [h["train_acc"] for h in history], label="train")
        ax[1].plot(ep, [h["val_acc"] for h in history], label="val")
        ax[1].set_title("accuracy"); ax[1].set_xlabel("epoch"); ax[1].legend()
        fig.tight_layout(); p = out / "curves.png"; fig.savefig(p, dpi=100); plt.close(fig); files.append(p)
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


def _confusion_png(cm, classes, path: Path, cell: int = 34) -> Path:
    """Confusion matrix (rows true, columns predicted) as a PNG, drawn with PIL (milliseconds)."""
    from PIL import Image, ImageDraw

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
