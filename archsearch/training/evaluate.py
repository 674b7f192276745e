"""Evaluation on held-out images, with optional test-time augmentation (TTA).

Per-epoch validation is single-view (cheap, comparable across runs: it picks ``best.pt``
and feeds sweeps); ``trainer.tta`` applies to the final test evaluation only.

BatchNorm's running statistics are a moving average over the last ~1/momentum steps (10 at
torch's 0.1). An epoch of a few dozen steps leaves them behind the weights: after the first
epoch of a 14-step synthetic run they still held 23% of their initial values and the statistics
of weights 14 steps old, at the peak learning rate; evaluated with them, the network scored val
loss 33 / accuracy 0.375 where the same weights with the statistics recomputed scored 1.68 / 0.62.
So when an epoch is that short (:func:`bn_lags`), the statistics are recomputed before the
network is evaluated (:func:`refresh_bn_stats`); full CIFAR-10 epochs (350 steps) keep theirs.
"""

from __future__ import annotations

import math

from archsearch.errors import ConfigError
from archsearch.training.batches import to_device

__all__ = ["BN_REFRESH_BATCHES", "TTA_VIEWS", "bn_lags", "evaluate", "parse_tta", "refresh_bn_stats", "view"]

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


BN_REFRESH_BATCHES = 8  # training batches (un-augmented) the statistics are recomputed from


def _batchnorms(model) -> list:
    import torch

    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
            and m.track_running_stats]


def bn_lags(model, steps_per_epoch: int) -> bool:
    """Whether an epoch of ``steps_per_epoch`` optimiser steps is too short for the model's
    BatchNorm running averages to follow the weights: fewer than 5/momentum steps (50 at torch's
    default 0.1), where a share of at least (1 - momentum)^steps (> 0.5%) is older than the epoch."""
    moms = [m.momentum for m in _batchnorms(model) if m.momentum is not None]
    return bool(moms) and steps_per_epoch < 5.0 / min(moms)


def refresh_bn_stats(model, x_u8, device, mean, std, channels_last: bool, batch_size: int,
                     batches: int = BN_REFRESH_BATCHES) -> None:
    """Recompute the BatchNorm running statistics of ``model`` as the plain average over the first
    ``batches`` batches of ``x_u8`` (the training images, un-augmented: what evaluation sees), in
    training mode without gradients; weights untouched, no random numbers drawn."""
    import torch

    bns = _batchnorms(model)
    if not bns or not len(x_u8):
        return
    was_training = model.training
    moms = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
    model.train()
    try:
        with torch.no_grad():
            for i in range(0, min(len(x_u8), batch_size * batches), batch_size):
                xb = x_u8[i:i + batch_size]
                if len(xb) < 2:  # BatchNorm cannot take the variance of one image
                    break
                model(to_device(torch.from_numpy(xb), device, mean, std, channels_last))
    finally:
        for m, mom in zip(bns, moms):
            m.momentum = mom
        model.train(was_training)
