"""Optimiser, learning-rate schedule and the weight average (EMA), from the config groups
``optim``, ``sched`` and ``trainer.ema``."""

from __future__ import annotations

import copy
import logging

from archsearch.errors import ConfigError

__all__ = ["WeightEMA", "effective_lr", "make_optimizer", "make_scheduler", "parse_ema"]

# torch is imported in the functions that use it: archsearch.train imports the training modules at
# its top and refuses a mistyped knob before torch is loaded, and `from archsearch import fit` loads
# torch only when called


log = logging.getLogger("archsearch")

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("onecycle", "reduce_on_plateau", "cosine", "constant")
BATCH_SCALINGS = ("none", "linear", "sqrt")


def _param_groups(cfg, model) -> list[dict]:
    """Weight decay on conv/linear weights; on BatchNorm scales/shifts and biases (1-d tensors)
    only if ``optim.decay_norm_and_bias`` (default true, plain torch behaviour). Those 1-d
    tensors learn at ``optim.norm_lr_scale`` times the lr (default 1): fast-training recipes
    give BatchNorm's shifts a much higher rate than the weights. Each group carries its
    ``lr_scale`` so the schedule scales its peak the same way."""
    flag, scale = parse_norm_knobs(cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    if flag and scale == 1:
        return [{"params": params, "lr_scale": 1.0}]
    groups = [{"params": [p for p in params if p.ndim > 1], "lr_scale": 1.0},
              {"params": [p for p in params if p.ndim <= 1], "lr_scale": float(scale)}]
    if not flag:
        groups[1]["weight_decay"] = 0.0
    return groups


def parse_norm_knobs(cfg) -> tuple[bool, float]:
    """``optim.decay_norm_and_bias`` and ``optim.norm_lr_scale``, checked."""
    flag = cfg.get("decay_norm_and_bias", True)
    if not isinstance(flag, bool):
        raise ConfigError(f"optim.decay_norm_and_bias: must be true or false, got {flag!r}")
    scale = cfg.get("norm_lr_scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 1000:
        raise ConfigError(f"optim.norm_lr_scale: the lr multiplier for BatchNorm and biases must be a number in "
                          f"(0, 1000], such as 1 (off) or 10; got {scale!r}")
    return flag, float(scale)


def _with_lr(groups: list[dict], lr: float) -> list[dict]:
    return [{**g, "lr": lr * g["lr_scale"]} for g in groups]


def effective_lr(cfg, batch_size: int) -> float:
    """The peak lr a run uses: ``optim.lr`` as written (``optim.batch_scaling=none``, the default),
    or ``optim.lr`` given for a batch of ``optim.base_batch_size`` and scaled to ``batch_size``:
    in proportion (``linear``, SGD's rule) or with its square root (``sqrt``, Adam's)."""
    how = cfg.get("batch_scaling", "none") or "none"
    if how not in BATCH_SCALINGS:
        raise ConfigError(f"optim.batch_scaling: unknown value {how!r}; choose one of {', '.join(BATCH_SCALINGS)}")
    lr = float(cfg.lr)
    if how == "none":
        return lr
    base = cfg.get("base_batch_size", 128)
    if isinstance(base, bool) or not isinstance(base, int) or base < 1:
        raise ConfigError(f"optim.base_batch_size: the batch size optim.lr is given for must be a positive integer "
                          f"such as 128; got {base!r}")
    ratio = batch_size / base
    return lr * (ratio if how == "linear" else ratio ** 0.5)


def make_optimizer(cfg, model, lr: float | None = None):
    """``cfg``: the ``optim`` group; ``lr``: the peak lr (default ``optim.lr``)."""
    import torch

    name, lr = cfg.name, float(cfg.lr if lr is None else lr)
    params = _with_lr(_param_groups(cfg, model), lr)
    if name == "sgd":
        # on CUDA the fused kernel: one launch for all parameters, and with an fp16 GradScaler no
        # host sync per step (the unscale and the inf check happen inside the kernel)
        fused = _fused(model)
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, nesterov=bool(cfg.nesterov),
                               weight_decay=cfg.weight_decay, **fused)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay,
                                 **_fused(model))
    raise ConfigError(f"optim.name: unknown optimiser {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def _fused(model) -> dict:
    """``{"fused": True}`` when every parameter is on a CUDA device (fused kernels need it)."""
    params = list(model.parameters())
    return {"fused": True} if params and all(p.device.type == "cuda" for p in params) else {}


def make_scheduler(cfg, opt, lr: float, epochs: int, steps: int):
    """``cfg``: the ``sched`` group -> (scheduler or None, when it steps: step | plateau | none)."""
    import torch

    name = cfg.name
    if name == "onecycle":
        # OneCycleLR divides by (pct_start * total_steps - 1): at 5 steps and pct_start 0.2 that
        # is 0 (ZeroDivisionError), so the warm-up gets at least 2 steps
        total = max(1, epochs * steps)
        if total < 4:
            log.warning("sched: onecycle needs at least 4 steps and this run has %d: the lr stays at optim.lr "
                        "(%g) for this run", total, lr)
            return None, "none"
        pct = min(max(float(cfg.pct_start), 2.0 / total), 0.5)
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=[lr * g.get("lr_scale", 1.0) for g in opt.param_groups], epochs=epochs, steps_per_epoch=steps, pct_start=pct,
            div_factor=cfg.div_factor, final_div_factor=cfg.final_div_factor,
            anneal_strategy=cfg.anneal, three_phase=bool(cfg.get("three_phase", False))), "step"
    if name == "reduce_on_plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=cfg.factor, patience=cfg.patience, min_lr=cfg.min_lr), "plateau"
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps, eta_min=cfg.min_lr), "step"
    if name == "constant":
        return None, "none"
    raise ConfigError(f"sched.name: unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")


def parse_ema(tcfg) -> float | None:
    """``trainer.ema``: the per-step decay, or None (off)."""
    v = tcfg.get("ema")
    if v in (None, False, 0):
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < float(v) < 1.0:
        raise ConfigError(f"trainer.ema: the per-step decay must be a number in (0, 1) such as 0.999, or null to "
                          f"turn it off; got {v!r}")
    return float(v)


class WeightEMA:
    """Exponential moving average of a model's weights (and float buffers: BatchNorm's running
    statistics), updated after every optimiser step. The decay ramps up as
    ``min(decay, (1 + n) / (10 + n))`` so the first steps are not averaged with the random
    initialisation."""

    def __init__(self, model, decay: float):
        self.decay, self.updates = float(decay), 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        # the (average, live) tensor pairs, paired once: update() runs after every optimiser step
        self._floats = ([*self.model.parameters(), *(b for b in self.model.buffers() if b.is_floating_point())],
                        [*model.parameters(), *(b for b in model.buffers() if b.is_floating_point())])
        pairs = [(be, b) for be, b in zip(self.model.buffers(), model.buffers()) if not b.is_floating_point()]
        self._counters = ([be for be, _ in pairs], [b for _, b in pairs])

    def update(self) -> None:
        """Move the average towards the live model it was made from."""
        import torch

        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        with torch.no_grad():
            torch._foreach_lerp_(self._floats[0], self._floats[1], 1.0 - d)
            if self._counters[0]:  # BatchNorm's step counters: one launch for all, not one per layer
                torch._foreach_copy_(self._counters[0], self._counters[1])

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])
