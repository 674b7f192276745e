"""Batch mixing (``aug.mix``): mixup and cutmix, on the device, after the per-image pipeline.

A mixed batch trains on ``lam * loss(y) + (1 - lam) * loss(y[perm])``: mixup blends each image
with another of the batch (``lam ~ Beta(alpha, alpha)``), cutmix pastes a box of another image
over it (the box's area is ``1 - lam``, ``lam`` recomputed from the box as clipped to the image).
Every random draw is made on the host from a generator seeded by (run seed, epoch), so a run
mixes the same way whatever its device or number of workers, and a resumed run mixes as the run
it continues. The cool-down epochs are not mixed unless ``aug.mix.cooldown`` says so: they exist
to end the run on images that look like the test set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from archsearch.errors import ConfigError

__all__ = ["MixDraw", "MixSpec", "mix_batch", "mixed_loss", "parse_mix"]

# torch is imported in the functions that use it: archsearch.train imports the training modules at
# its top and refuses a mistyped knob before torch is loaded

_KEYS = ("mixup_alpha", "cutmix_alpha", "prob", "cooldown")


@dataclass(frozen=True)
class MixSpec:
    """``aug.mix``, checked. Both alphas > 0: each mixed batch is mixup or cutmix, half and half."""
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    prob: float = 1.0
    cooldown: bool = False

    def draws(self, seed: int, epoch: int) -> np.random.Generator:
        """The generator of one epoch's draws."""
        return np.random.default_rng([seed, epoch, 0x6D6978])

    def draw(self, rng: np.random.Generator, n: int, height: int, width: int) -> MixDraw | None:
        """What one batch of ``n`` images does: None (not mixed) or how it is mixed."""
        if rng.random() >= self.prob:
            return None
        kinds = [k for k, a in (("mixup", self.mixup_alpha), ("cutmix", self.cutmix_alpha)) if a > 0]
        kind = kinds[int(rng.integers(len(kinds)))] if len(kinds) > 1 else kinds[0]
        alpha = self.mixup_alpha if kind == "mixup" else self.cutmix_alpha
        lam = float(rng.beta(alpha, alpha))
        perm = rng.permutation(n)
        if kind == "mixup":
            return MixDraw(kind, lam, perm, None)
        r = math.sqrt(1.0 - lam)
        ch, cw = int(height * r), int(width * r)
        cy, cx = int(rng.integers(height)), int(rng.integers(width))
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch - ch // 2, height)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw - cw // 2, width)
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (height * width)
        return MixDraw(kind, lam, perm, (y0, y1, x0, x1))


@dataclass(frozen=True)
class MixDraw:
    kind: str  # mixup | cutmix
    lam: float  # the share of the loss on the batch's own labels
    perm: np.ndarray  # the partner of each image
    box: tuple[int, int, int, int] | None  # cutmix: rows y0:y1, columns x0:x1 taken from the partner


def _number(v, name: str, lo: float, hi: float, closed_hi: bool = True) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi or (not closed_hi and v == hi):
        raise ConfigError(f"aug.mix.{name}: must be a number in [{lo:g}, {hi:g}{']' if closed_hi else ')'}; got {v!r}")
    return float(v)


def parse_mix(acfg: dict) -> MixSpec | None:
    """``aug.mix`` (a mapping; absent or both alphas 0: off) -> MixSpec or None."""
    m = acfg.get("mix")
    if m is None:
        return None
    if not isinstance(m, Mapping):
        raise ConfigError(f"aug.mix: must be a mapping with keys {', '.join(_KEYS)}; got {m!r}")
    unknown = sorted(set(m) - set(_KEYS))
    if unknown:
        raise ConfigError(f"aug.mix.{unknown[0]}: unknown key; choose from {', '.join(_KEYS)}")
    cool = m.get("cooldown", False)
    if not isinstance(cool, bool):
        raise ConfigError(f"aug.mix.cooldown: must be true or false (whether the cool-down epochs mix too); "
                          f"got {cool!r}")
    spec = MixSpec(_number(m.get("mixup_alpha", 0.0), "mixup_alpha", 0, 100),
                   _number(m.get("cutmix_alpha", 0.0), "cutmix_alpha", 0, 100),
                   _number(m.get("prob", 1.0), "prob", 0, 1), cool)
    return spec if (spec.mixup_alpha > 0 or spec.cutmix_alpha > 0) and spec.prob > 0 else None


def mix_batch(x, y, d: MixDraw):
    """Mix a normalised device batch ``x`` (N, C, H, W) -> (mixed x, the partners' labels)."""
    import torch

    perm = torch.from_numpy(d.perm).to(x.device, non_blocking=True)
    if d.kind == "mixup":
        x = torch.lerp(x[perm], x, d.lam)
    else:
        y0, y1, x0, x1 = d.box
        x = x.clone()
        x[:, :, y0:y1, x0:x1] = x[perm][:, :, y0:y1, x0:x1]
    return x, y[perm]


def mixed_loss(logits, y, y_partner, lam: float, label_smoothing: float):
    import torch.nn.functional as F

    return (lam * F.cross_entropy(logits, y, label_smoothing=label_smoothing)
            + (1.0 - lam) * F.cross_entropy(logits, y_partner, label_smoothing=label_smoothing))
