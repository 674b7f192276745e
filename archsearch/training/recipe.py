"""Recipe knobs that act on a built model before training: BatchNorm momentum
(``trainer.bn_momentum``) and a first layer initialised by whitening the training images'
patches (``trainer.stem_init``). Neither changes the architecture or its parameter count:
a frozen whitened layer is still a layer and counts towards the budget like any other.
"""

from __future__ import annotations

import logging

import numpy as np

from archsearch.errors import ConfigError

__all__ = ["STEM_INITS", "apply_recipe", "whiten_stem"]

log = logging.getLogger("archsearch")

# torch is imported in the functions that use it: archsearch.train imports the training modules at
# its top and refuses a mistyped knob before torch is loaded, and `from archsearch import fit` loads
# torch only when called


STEM_INITS = ("default", "whiten", "whiten_frozen")


def _bn_momentum(tcfg) -> float | None:
    v = tcfg.get("bn_momentum")
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < float(v) <= 1.0:
        raise ConfigError(f"trainer.bn_momentum: BatchNorm's running-statistics momentum must be a number in (0, 1] "
                          f"(torch's default 0.1; higher follows the weights faster), or null; got {v!r}")
    return float(v)


def _stem_init(tcfg) -> str:
    v = tcfg.get("stem_init") or "default"
    if v not in STEM_INITS:
        raise ConfigError(f"trainer.stem_init: unknown value {v!r}; choose one of {', '.join(STEM_INITS)}")
    return str(v)


def check_recipe(tcfg) -> None:
    """Refuse bad values before any data is loaded."""
    _bn_momentum(tcfg)
    _stem_init(tcfg)


def apply_recipe(model, tcfg, x_train, mean_px, std_px, seed: int) -> str:
    """Apply ``trainer.bn_momentum`` and ``trainer.stem_init`` to ``model`` (on the host, before
    it moves to its device) -> a short description for the run's log ('' when nothing applied)."""
    import torch.nn as nn

    done = []
    m = _bn_momentum(tcfg)
    if m is not None:
        for mod in model.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.momentum = m
        done.append(f"BatchNorm momentum {m:g}")
    how = _stem_init(tcfg)
    if how != "default":
        n = whiten_stem(model, x_train, mean_px, std_px, seed, freeze=how == "whiten_frozen")
        done.append(f"first conv whitened from {n:,} patches" + (" (frozen)" if how == "whiten_frozen" else ""))
    return "; ".join(done)


def _first_conv(model):
    import torch.nn as nn

    for mod in model.modules():
        if isinstance(mod, nn.Conv2d):
            if mod.groups != 1:
                raise ConfigError("trainer.stem_init: the model's first conv is grouped/depthwise; whitening needs a "
                                  "full conv as the first layer (use trainer.stem_init=default)")
            return mod
    raise ConfigError("trainer.stem_init: the model has no conv layer to whiten; use trainer.stem_init=default")


def whiten_stem(model, x_train, mean_px, std_px, seed: int, freeze: bool = False, images: int = 2000,
                eps: float = 5e-4) -> int:
    """Set the first conv's filters to the whitening basis of the training images' patches
    (its kernel size and dilation, on normalised pixels): eigenvectors of the patch
    covariance scaled by 1/sqrt(eigenvalue + eps), the strongest first, each with its
    negation so a ReLU after it keeps both signs. Channels beyond twice the patch size
    keep their random initialisation; a bias is zeroed. -> the number of patches used."""
    import torch
    import torch.nn.functional as F

    conv = _first_conv(model)
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(x_train), size=min(images, len(x_train)), replace=False))
    x = torch.from_numpy(np.ascontiguousarray(x_train[idx])).permute(0, 3, 1, 2).float()
    mean = torch.tensor(mean_px).view(1, -1, 1, 1)
    std = torch.tensor(std_px).view(1, -1, 1, 1)
    x = (x - mean) / std
    if x.shape[1] != conv.in_channels:
        raise ConfigError(f"trainer.stem_init: the first conv takes {conv.in_channels} channels, the images have "
                          f"{x.shape[1]}")
    cols = F.unfold(x, conv.kernel_size, dilation=conv.dilation)  # (N, C*k*k, L)
    patches = cols.transpose(1, 2).reshape(-1, cols.shape[1]).double()
    patches = patches - patches.mean(0, keepdim=True)
    cov = patches.T @ patches / len(patches)
    evals, evecs = torch.linalg.eigh(cov)  # ascending
    order = torch.argsort(evals, descending=True)
    basis = (evecs[:, order] / torch.sqrt(evals[order].clamp_min(0) + eps)).T  # (D, D), strongest first
    filters = torch.stack([basis, -basis], 1).reshape(-1, basis.shape[1])  # +v1, -v1, +v2, -v2, ...
    n = min(conv.out_channels, len(filters))
    with torch.no_grad():
        w = conv.weight.view(conv.out_channels, -1)
        w[:n] = filters[:n].to(w.dtype)
        if conv.bias is not None:
            conv.bias.zero_()
    if freeze:
        for p in conv.parameters():
            p.requires_grad_(False)
    return len(patches)
