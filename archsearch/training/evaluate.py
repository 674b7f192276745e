"""Evaluation on held-out images, with optional test-time augmentation (TTA).

Per-epoch validation is single-view (cheap, comparable across runs: it picks ``best.pt``
and feeds sweeps); ``trainer.tta`` applies to the final test evaluation only.
"""

from __future__ import annotations

import math

from archsearch.errors import ConfigError
from archsearch.training.batches import to_device

__all__ = ["TTA_VIEWS", "evaluate", "parse_tta", "view"]

# torch is imported in the functions that use it: archsearch.train imports the training modules at
# its top and refuses a mistyped knob before torch is loaded, and `from archsearch import fit` loads
# torch only when called

# views as (dx, dy, mirrored); shifted views pad by reflection
TTA_VIEWS = {
    "none": ((0, 0, False),),
    "flip": ((0, 0, False), (0, 0, True)),
    "flip_shift": tuple((dx, dy, m) for m in (False, True) for dx, dy in ((0, 0), (1, 1), (-1, -1), (1, -1), (-1, 1))),
}


def parse_tta(tcfg) -> str:
    v = tcfg.get("tta") or "none"
    if v not in TTA_VIEWS:
        raise ConfigError(f"trainer.tta: unknown test-time augmentation {v!r}; choose one of {', '.join(TTA_VIEWS)}")
    return v


def view(x, dx: int, dy: int, mirrored: bool):
    """The image batch shifted by (dx, dy) pixels (reflect padding) and optionally mirrored."""
    import torch.nn.functional as F

    if dx or dy:
        p = max(abs(dx), abs(dy))
        h, w = x.shape[-2:]
        x = F.pad(x, (p, p, p, p), mode="reflect")[..., p + dy:p + dy + h, p + dx:p + dx + w]
    return x.flip(3) if mirrored else x


def _logits(model, xb, views, device, amp_dtype, channels_last: bool):
    """Logits of one batch; several views -> log of the mean probability (cross_entropy's
    log_softmax leaves it unchanged)."""
    import torch

    outs = []
    for dx, dy, mirrored in views:
        v = view(xb, dx, dy, mirrored)
        if channels_last:
            v = v.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            outs.append(model(v).float())
    if len(outs) == 1:
        return outs[0]
    return torch.logsumexp(torch.stack([o.log_softmax(1) for o in outs]), 0) - math.log(len(outs))


def evaluate(model, x_u8, y, device, mean, std, amp_dtype, channels_last, batch_size=512, keep=False,
             tta: str = "none"):
    """-> (loss, acc, preds or None). ``x_u8``: uint8 NHWC numpy; ``std`` is 1/(255*std).

    ``tta`` (a key of :data:`TTA_VIEWS`): average the class probabilities over the views of
    each image: ``flip`` the image and its mirror (2 passes), ``flip_shift`` those two at
    five 1-px diagonal offsets (10 passes). One host sync per call."""
    import torch
    import torch.nn.functional as F

    views = TTA_VIEWS[tta]
    model.eval()
    n = len(x_u8)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    preds = []
    with torch.inference_mode():
        for i in range(0, n, batch_size):
            xb = to_device(torch.from_numpy(x_u8[i:i + batch_size]), device, mean, std, channels_last)
            yb = torch.from_numpy(y[i:i + batch_size]).to(device)
            out = _logits(model, xb, views, device, amp_dtype, channels_last)
            loss_sum += F.cross_entropy(out, yb, reduction="sum")
            p = out.argmax(1)
            correct += (p == yb).sum()
            if keep:
                preds.append(p.cpu())
    if n == 0:
        return float("nan"), float("nan"), None
    return (loss_sum.item() / n, correct.item() / n, torch.cat(preds).numpy() if keep else None)
