"""``python -m archsearch.train model=dilated_sep [overrides]``: the one training loop.

Order of work: compose -> parse + analyse + budget check (refuse here: no data, no torch
model, no MLflow) -> data -> model -> MLflow run -> epochs -> test -> artifacts.
The Hydra entry returns the best validation accuracy so a sweeper can optimise it.
"""

from __future__ import annotations

import logging
import math
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .analysis import Report, analyze
from .budget import BudgetError, Violation, check, parse_budget
from .config import ConfigError, check_choices, spec_from_cfg
from .spec import ModelSpec, SpecError, spec_hash

__all__ = ["BudgetRejected", "NonFiniteLoss", "Pruned", "TrainResult", "gate", "main", "train"]

log = logging.getLogger("archsearch")


class BudgetRejected(Exception):
    def __init__(self, spec: ModelSpec, violations: list[Violation]):
        self.spec, self.violations = spec, violations
        super().__init__(f"{spec.name} rejected by the budget: " + "; ".join(v.message for v in violations))


class NonFiniteLoss(RuntimeError):
    pass


class Pruned(Exception):
    """Raised by an epoch hook (the sweeper's pruner) to stop a trial early."""

    def __init__(self, epoch: int, value: float):
        super().__init__(f"pruned after epoch {epoch} (val_acc {value:.4f})")
        self.epoch, self.value = epoch, value


@dataclass
class TrainResult:
    val_acc: float  # best validation accuracy (what sweeps optimise)
    test_acc: float | None
    test_loss: float | None
    epochs: int
    params: int
    rf: int
    macs: int
    seconds: float
    run_id: str | None = None
    history: list[dict] = field(default_factory=list)


# ------------------------------------------------------------------ budget gate
def gate(cfg) -> tuple[ModelSpec, Report]:
    """Parse, analyse and budget-check ``cfg.model``; raise SpecError / BudgetRejected."""
    from omegaconf import OmegaConf

    spec = spec_from_cfg(cfg.model)
    budget = parse_budget(OmegaConf.to_container(cfg.budget, resolve=True))
    report = analyze(spec)
    violations = check(report, budget)
    if violations:
        raise BudgetRejected(spec, violations)
    return spec, report


# ------------------------------------------------------------------ helpers
def _git_sha(cwd: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        sha = out.stdout.strip()
        if sha:
            dirty = subprocess.run(["git", "status", "--porcelain", "-uno"], cwd=cwd, capture_output=True,
                                   text=True, timeout=5).stdout.strip()
            return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def _seed_all(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(name: str):
    import torch

    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device: {name!r} requested but CUDA is not available; use auto or cpu")
    if not (name == "cpu" or name.startswith("cuda") or name == "mps"):
        raise ConfigError(f"trainer.device: unknown device {name!r}; choose one of auto, cpu, cuda, cuda:N")
    return torch.device(name)


def _cpu_bf16() -> bool:
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return False


def pick_amp(mode: str, device) -> Any:
    """-> torch dtype for autocast, or None. ``auto``: bf16 where supported, fp16 on older GPUs."""
    import torch

    modes = ("auto", "bf16", "fp16", "off")
    if mode not in modes:
        raise ConfigError(f"trainer.amp: unknown mode {mode!r}; choose one of {', '.join(modes)}")
    if mode == "off":
        return None
    if mode == "bf16":
        return torch.bfloat16
    if mode == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        return torch.bfloat16 if _cpu_bf16() else None
    return None


class _BatchAug:
    """Dataset indexed by (seed, indices, phase): returns one augmented uint8 NHWC batch.

    Each batch reseeds the albumentations pipeline from its own seed, so augmentation is
    reproducible (and resumable) whatever the number of workers. ``phase`` picks the
    pipeline: 0 the main one, 1 the cool-down one (the last ``aug.cooldown_fraction`` of the epochs). The
    phase travels with the index because persistent workers hold their own copy of this
    object: switching an attribute in the main process would not reach them."""

    def __init__(self, x, y, pipeline, cooldown=None):
        self.x, self.y, self.pipelines = x, y, (pipeline, cooldown)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, item):
        import numpy as np
        import torch

        seed, idx, phase = item
        xb = self.x[idx]
        pipeline = self.pipelines[phase]
        if pipeline is not None:
            pipeline.set_random_seed(seed)
            xb = np.stack([pipeline(image=im)["image"] for im in xb])
        return torch.from_numpy(np.ascontiguousarray(xb)), torch.from_numpy(self.y[idx])


class _EpochBatches:
    """Sampler of (seed, indices, phase) with a per-epoch seeded permutation; phase 1 from
    epoch ``cooldown_from`` on (0-based)."""

    def __init__(self, n: int, batch_size: int, seed: int, cooldown_from: int | None = None):
        self.n, self.bs, self.seed, self.epoch = n, batch_size, seed, 0
        self.cooldown_from = cooldown_from

    def __len__(self):
        return (self.n + self.bs - 1) // self.bs

    def __iter__(self):
        import numpy as np

        rng = np.random.default_rng([self.seed, self.epoch])
        perm = rng.permutation(self.n)
        phase = int(self.cooldown_from is not None and self.epoch >= self.cooldown_from)
        for b in range(len(self)):
            yield (int(self.seed * 1_000_003 + self.epoch * 10_007 + b) % 2**31, perm[b * self.bs:(b + 1) * self.bs],
                   phase)


def _workers(setting, device) -> int:
    if setting not in (None, "auto"):
        return int(setting)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if device.type == "cuda":
        return min(8, max(1, cpus - 1))
    return 1 if cpus <= 4 else min(4, cpus // 4)  # on CPU the model needs the cores


def _to_device(xb, device, mean, std, channels_last: bool):
    """uint8 NHWC on the host -> normalised float NCHW on the device."""
    import torch

    x = xb.to(device, non_blocking=True).permute(0, 3, 1, 2).float()
    x = (x - mean) * std  # std holds 1/(255*std); mean holds 255*mean
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    else:
        x = x.contiguous()
    return x


# test-time augmentation: views as (dx, dy, mirrored); shifted views pad by reflection
TTA_VIEWS = {
    "none": ((0, 0, False),),
    "flip": ((0, 0, False), (0, 0, True)),
    "flip_shift": tuple((dx, dy, m) for m in (False, True) for dx, dy in ((0, 0), (1, 1), (-1, -1), (1, -1), (-1, 1))),
}


def _view(x, dx: int, dy: int, mirrored: bool):
    import torch.nn.functional as F

    if dx or dy:
        p = max(abs(dx), abs(dy))
        h, w = x.shape[-2:]
        x = F.pad(x, (p, p, p, p), mode="reflect")[..., p + dy:p + dy + h, p + dx:p + dx + w]
    return x.flip(3) if mirrored else x


def evaluate(model, x_u8, y, device, mean, std, amp_dtype, channels_last, batch_size=512, keep=False,
             tta: str = "none"):
    """-> (loss, acc, preds or None). x_u8: uint8 NHWC numpy.

    ``tta`` (a key of :data:`TTA_VIEWS`): average the class probabilities over the views of
    each image: ``flip`` the image and its mirror (2 passes), ``flip_shift`` those two at
    five 1-px diagonal offsets (10 passes)."""
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
            xb = _to_device(torch.from_numpy(x_u8[i:i + batch_size]), device, mean, std, channels_last)
            yb = torch.from_numpy(y[i:i + batch_size]).to(device)
            outs = []
            for dx, dy, mirrored in views:
                v = _view(xb, dx, dy, mirrored)
                if channels_last:
                    v = v.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    outs.append(model(v).float())
            if len(outs) == 1:
                out = outs[0]
            else:  # log of the mean probability: cross_entropy's log_softmax leaves it unchanged
                out = torch.logsumexp(torch.stack([o.log_softmax(1) for o in outs]), 0) - math.log(len(outs))
            loss_sum += F.cross_entropy(out, yb, reduction="sum")
            p = out.argmax(1)
            correct += (p == yb).sum()
            if keep:
                preds.append(p.cpu())
    if n == 0:
        return float("nan"), float("nan"), None
    return (loss_sum.item() / n, correct.item() / n, torch.cat(preds).numpy() if keep else None)


class WeightEMA:
    """Exponential moving average of a model's weights (and float buffers: BatchNorm's running
    statistics), updated after every optimiser step. The decay ramps up as
    ``min(decay, (1 + n) / (10 + n))`` so the first steps are not averaged with the random
    initialisation."""

    def __init__(self, model, decay: float):
        import copy

        self.decay, self.updates = float(decay), 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        # the (average, live) tensor pairs, paired once: update() runs after every optimiser step
        self._floats = ([*self.model.parameters(), *(b for b in self.model.buffers() if b.is_floating_point())],
                        [*model.parameters(), *(b for b in model.buffers() if b.is_floating_point())])
        self._counters = [(be, b) for be, b in zip(self.model.buffers(), model.buffers()) if not b.is_floating_point()]

    def update(self) -> None:
        """Move the average towards the live model it was made from."""
        import torch

        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        with torch.no_grad():
            torch._foreach_lerp_(self._floats[0], self._floats[1], 1.0 - d)
            for be, b in self._counters:
                be.copy_(b)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])


def _ema_decay(tcfg) -> float | None:
    v = tcfg.get("ema")
    if v in (None, False, 0):
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < float(v) < 1.0:
        raise ConfigError(f"trainer.ema: the per-step decay must be a number in (0, 1) such as 0.999, or null to "
                          f"turn it off; got {v!r}")
    return float(v)


def _tta(tcfg) -> str:
    v = tcfg.get("tta") or "none"
    if v not in TTA_VIEWS:
        raise ConfigError(f"trainer.tta: unknown test-time augmentation {v!r}; choose one of {', '.join(TTA_VIEWS)}")
    return v


def _cooldown_epochs(acfg: dict, epochs: int) -> int:
    """Epochs at the end of the run on the cool-down pipeline: ``aug.cooldown_fraction`` of the
    run, rounded (a fraction, like OneCycle's warm-up, so a short run gets a short cool-down)."""
    v = acfg.get("cooldown_fraction") or 0
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
        raise ConfigError(f"aug.cooldown_fraction: must be a number in [0, 1) (the share of the epochs, at the end, "
                          f"trained on aug.cooldown); got {v!r}")
    return int(math.floor(v * epochs + 0.5))


def _param_groups(cfg, model) -> list[dict]:
    """Weight decay on conv/linear weights; on BatchNorm scales/shifts and biases (1-d tensors)
    only if ``optim.decay_norm_and_bias`` (default true, plain torch behaviour)."""
    flag = cfg.get("decay_norm_and_bias", True)
    if not isinstance(flag, bool):
        raise ConfigError(f"optim.decay_norm_and_bias: must be true or false, got {flag!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    if flag:
        return [{"params": params}]
    return [{"params": [p for p in params if p.ndim > 1]},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]


def _make_optimizer(cfg, model):
    import torch

    name = cfg.name
    params = _param_groups(cfg, model)
    if name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=bool(cfg.nesterov),
                               weight_decay=cfg.weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    raise ConfigError(f"optim.name: unknown optimiser {name!r}; choose one of sgd, adamw")


def _make_scheduler(cfg, opt, lr: float, epochs: int, steps: int):
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
            opt, max_lr=lr, epochs=epochs, steps_per_epoch=steps, pct_start=pct,
            div_factor=cfg.div_factor, final_div_factor=cfg.final_div_factor,
            anneal_strategy=cfg.anneal, three_phase=bool(cfg.get("three_phase", False))), "step"
    if name == "reduce_on_plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=cfg.factor, patience=cfg.patience, min_lr=cfg.min_lr), "plateau"
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps, eta_min=cfg.min_lr), "step"
    if name == "constant":
        return None, "none"
    raise ConfigError(f"sched.name: unknown schedule {name!r}; choose one of onecycle, reduce_on_plateau, cosine, constant")


def _save(obj, path: Path) -> None:
    import torch

    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)  # a killed run never leaves a truncated checkpoint


# ------------------------------------------------------------------ artifacts
def _plots(out: Path, history, classes, y_true, y_pred, x_test, max_wrong: int = 32) -> list[Path]:
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


# ------------------------------------------------------------------ the loop
def train(cfg, out_dir: str | Path, epoch_hook: Callable[[int, float], None] | None = None,
          parent_run_id: str | None = None, tracker=None, data=None, run_tags: dict | None = None,
          run_started: Callable[[str], None] | None = None) -> TrainResult:
    """Train ``cfg`` (a composed config); refuses over-budget specs before touching data.

    ``epoch_hook(epoch, val_acc)`` may raise :class:`Pruned`. ``data`` may be pre-loaded
    :class:`~archsearch.data.Splits` (a sweep loads its dataset once per process).
    """
    t0 = time.time()
    spec, report = gate(cfg)  # may raise: nothing loaded yet

    import numpy as np
    import torch
    import torch.nn.functional as F
    from omegaconf import OmegaConf
    from tqdm import tqdm

    from .augment import build_pipeline, save_grid
    from .build import build_model
    from .data import load_data
    from .tracking import flatten, make_tracker

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tcfg = cfg.trainer
    base_dir = Path(os.environ.get("ARCHSEARCH_BASE", os.getcwd()))
    seed = int(cfg.seed)
    _seed_all(seed)
    if tcfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    device = pick_device(str(tcfg.device))
    amp_dtype = pick_amp(str(tcfg.amp), device)
    acfg = OmegaConf.to_container(cfg.aug, resolve=True)
    epochs = int(tcfg.epochs)
    cool = _cooldown_epochs(acfg, epochs)
    ema_decay, tta = _ema_decay(tcfg), _tta(tcfg)
    if device.type == "cuda" and not tcfg.deterministic:
        torch.backends.cudnn.benchmark = True

    if data is None:
        data = load_data(OmegaConf.to_container(cfg.data, resolve=True), base_dir)
    if data.num_classes != spec.num_classes:
        raise ConfigError(f"model.num_classes: the model outputs {spec.num_classes} classes but the data has "
                          f"{data.num_classes} ({', '.join(data.classes[:5])}...)")
    if data.image_shape != spec.input_shape:
        raise ConfigError(f"model.input_size: the model expects {spec.input_shape} images but the data has "
                          f"{data.image_shape}")
    has_val = len(data.x_val) > 0  # data.val_size=0: train on every training image, best.pt = the last epoch
    if not has_val and epoch_hook is not None:
        raise ConfigError("data.val_size: a sweep trial is judged on validation accuracy; set data.val_size > 0")
    mean_px = [m * 255 for m in data.mean]
    pipeline = build_pipeline(acfg.get("train"), mean_px)
    cool_pipeline = build_pipeline(acfg.get("cooldown"), mean_px, where="aug.cooldown") if cool else None

    model = build_model(spec).to(device)
    channels_last = bool(tcfg.channels_last)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    mean_t = torch.tensor(mean_px, device=device).view(1, 3, 1, 1)
    istd_t = (1.0 / (torch.tensor(data.std, device=device) * 255)).view(1, 3, 1, 1)

    bs = int(tcfg.batch_size)
    sampler = _EpochBatches(len(data.x_train), bs, seed, cooldown_from=epochs - cool if cool else None)
    nw = _workers(tcfg.workers, device)
    loader = torch.utils.data.DataLoader(
        _BatchAug(data.x_train, data.y_train, pipeline, cool_pipeline), sampler=sampler, batch_size=None,
        num_workers=nw, pin_memory=device.type == "cuda", persistent_workers=nw > 0,
        prefetch_factor=4 if nw > 0 else None)
    opt = _make_optimizer(cfg.optim, model)
    sched, sched_kind = _make_scheduler(cfg.sched, opt, float(cfg.optim.lr), epochs, len(sampler))
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    step_fn = model
    if tcfg.get("compile"):
        step_fn = torch.compile(model)
    ema = WeightEMA(model, ema_decay) if ema_decay else None
    eval_model = ema.model if ema else model  # what val/test accuracy and best.pt describe

    start_epoch, best_val, history, resumed_run = 0, -1.0, [], None
    if tcfg.resume:
        ck_path = Path(str(tcfg.resume)).expanduser()
        if not ck_path.exists():
            raise ConfigError(f"trainer.resume: no checkpoint at {ck_path}")
        ck = torch.load(ck_path, map_location=device, weights_only=False)
        if ck["spec_hash"] != spec_hash(spec):
            raise ConfigError(f"trainer.resume: {ck_path} holds a different architecture "
                              f"(spec {ck['spec_hash']}, this run {spec_hash(spec)})")
        model.load_state_dict(ck["model"]); opt.load_state_dict(ck["optimizer"])
        if sched is not None and ck.get("scheduler"):
            sched.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        if ema is not None:
            if not ck.get("ema"):
                raise ConfigError(f"trainer.ema: {ck_path} was trained without EMA; resume with trainer.ema=null")
            ema.load_state_dict(ck["ema"])
        start_epoch, best_val, history = ck["epoch"] + 1, ck["best_val"], ck["history"]
        resumed_run = ck.get("run_id")
        torch.set_rng_state(ck["rng"]["torch"]); np.random.set_state(ck["rng"]["numpy"])
        random.setstate(ck["rng"]["python"])

    sh = spec_hash(spec)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    tracker = tracker or make_tracker(resolved.get("tracking"), base_dir)
    tags = {"model": spec.name, "spec_hash": sh, "git_commit": _git_sha(base_dir), "device": str(device),
            "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "off", "seed": seed,
            "data": resolved["data"].get("source"), **(run_tags or {})}
    tracker.start(name=cfg.get("run_name") or f"{spec.name}-{sh[:6]}", tags=tags,
                  parent_run_id=parent_run_id, run_id=resumed_run)
    status = "FAILED"
    try:
        if run_started is not None and tracker.run_id:
            run_started(tracker.run_id)
        if not resumed_run:
            params = flatten({k: v for k, v in resolved.items() if k not in ("tracking", "trial", "hydra")})
            params.update({"model.params": report.params, "model.rf": report.rf, "model.macs": report.macs,
                           "model.spec_hash": sh, "data.n_train": len(data.x_train), "data.n_val": len(data.x_val),
                           "data.n_test": len(data.x_test)})
            tracker.log_params(params)
            (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
            from .validate import format_table
            (out / "analysis.txt").write_text(format_table(report, parse_budget(resolved["budget"]), []) + "\n")
            tracker.log_artifact(out / "config.yaml")
            tracker.log_artifact(out / "analysis.txt")
            if pipeline is not None and tracker.enabled:
                rng = np.random.default_rng(seed)
                idx = rng.choice(len(data.x_train), size=min(32, len(data.x_train)), replace=False)
                pipeline.set_random_seed(seed)
                aug = np.stack([pipeline(image=im)["image"] for im in data.x_train[idx]])
                tracker.log_artifact(save_grid(aug, str(out / "augmented_samples.png"),
                                               [data.classes[i] for i in data.y_train[idx]]))
        log.info("%s:%s params %s, RF %d, %s MACs | %s | device %s, amp %s, %d workers, batch %d",
                 spec.name, "" if not resumed_run else " (resumed)", f"{report.params:,}", report.rf,
                 f"{report.macs:,}", data.summary(), device, tags["amp"], nw, bs)

        # per-epoch validation is single-view (cheap, comparable across runs: it picks best.pt and
        # feeds sweeps); trainer.tta applies to the final test evaluation
        ev = dict(device=device, mean=mean_t, std=istd_t, amp_dtype=amp_dtype, channels_last=channels_last,
                  batch_size=int(tcfg.eval_batch_size))
        log_every = max(1, int(tcfg.log_every))
        show_bar = bool(tcfg.get("progress", True))
        for epoch in range(start_epoch, epochs):
            sampler.epoch = epoch
            model.train()
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            seen, te = 0, time.time()
            bar = tqdm(total=len(sampler), desc=f"epoch {epoch + 1}/{epochs}", leave=False, disable=not show_bar,
                       dynamic_ncols=True, file=sys.stderr)
            for step, (xb, yb) in enumerate(loader):
                x = _to_device(xb, device, mean_t, istd_t, channels_last)
                y = yb.to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    logits = step_fn(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=float(tcfg.label_smoothing))
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                if sched_kind == "step":
                    sched.step()
                if ema is not None:
                    ema.update()
                loss_sum += loss.detach() * len(y)
                correct += (logits.detach().argmax(1) == y).sum()
                seen += len(y)
                if (step + 1) % log_every == 0 or step + 1 == len(sampler):
                    ls = loss_sum.item()  # the only host sync, every log_every steps
                    if not math.isfinite(ls):
                        raise NonFiniteLoss(f"training loss became {ls} in epoch {epoch + 1} (step {step + 1}); "
                                            f"lower optim.lr (now {cfg.optim.lr}) or check the data")
                    el = time.time() - te
                    bar.update(step + 1 - bar.n)
                    bar.set_postfix(loss=f"{ls / seen:.3f}", acc=f"{correct.item() / seen:.3f}",
                                    img_s=f"{seen / max(el, 1e-9):.0f}")
            bar.close()
            ep_s = time.time() - te
            train_loss, train_acc = loss_sum.item() / max(seen, 1), correct.item() / max(seen, 1)
            val_loss, val_acc, _ = evaluate(eval_model, data.x_val, data.y_val, **ev)
            extra = {}
            if ema is not None:  # the live weights too: what EMA adds is visible in every run
                extra["val_loss_raw"], extra["val_acc_raw"], _ = evaluate(model, data.x_val, data.y_val, **ev)
            if sched_kind == "plateau":
                sched.step(val_loss)
            lr = opt.param_groups[0]["lr"]
            rec = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
                   "val_acc": val_acc, **extra, "lr": lr, "epoch_seconds": ep_s,
                   "images_per_s": seen / max(ep_s, 1e-9)}
            history.append(rec)
            is_best = val_acc > best_val if has_val else True
            best_val = max(best_val, val_acc) if has_val else float("nan")
            tracker.log_metrics({**{k: v for k, v in rec.items() if k != "epoch"}, "best_val_acc": best_val,
                                 "epochs_done": epoch + 1}, step=epoch + 1)
            log.info("epoch %d/%d  train loss %.4f acc %.4f | val loss %.4f acc %.4f%s | lr %.2e | %.0fs %.0f img/s",
                     epoch + 1, epochs, train_loss, train_acc, val_loss, val_acc,
                     f" (live weights {extra['val_acc_raw']:.4f})" if extra else "", lr, ep_s, rec["images_per_s"])
            if tcfg.checkpoint:
                ck = {"model": model.state_dict(), "optimizer": opt.state_dict(),
                      "scheduler": sched.state_dict() if sched is not None else None,
                      "scaler": scaler.state_dict(), "ema": ema.state_dict() if ema else None, "epoch": epoch,
                      "best_val": best_val, "history": history,
                      "spec_hash": sh, "spec": spec.to_dict(), "run_id": tracker.run_id,
                      "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                              "python": random.getstate()}}
                _save(ck, out / "last.pt")
                if is_best:
                    _save(ck, out / "best.pt")
            if epoch_hook is not None:
                epoch_hook(epoch + 1, val_acc)  # may raise Pruned

        test_loss, test_acc, preds = evaluate(eval_model, data.x_test, data.y_test, **ev, keep=True, tta=tta)
        # what each evaluation-side choice contributes, measured on the same weights
        parts = {}
        if ema is not None:
            parts["test_acc_raw"] = evaluate(model, data.x_test, data.y_test, **ev, tta=tta)[1]
        if tta != "none":
            parts["test_acc_no_tta"] = evaluate(eval_model, data.x_test, data.y_test, **ev)[1]
        wall = time.time() - t0
        tracker.log_metrics({"test_acc": test_acc, "test_loss": test_loss, **parts, "wall_seconds": wall},
                            step=epochs)
        if tracker.enabled:
            for p in _plots(out, history, data.classes, data.y_test, preds, data.x_test):
                tracker.log_artifact(p)
            if tcfg.checkpoint and (out / "best.pt").exists() and cfg.tracking.get("log_checkpoint", True):
                tracker.log_artifact(out / "best.pt", "checkpoints")
        status = "FINISHED"
        how = []
        if tta != "none":
            how.append(f"{tta} TTA, single view {parts['test_acc_no_tta']:.4f}")
        if ema is not None:
            how.append(f"EMA weights, live weights {parts['test_acc_raw']:.4f}")
        log.info("done %s: test acc %.4f%s (loss %.4f), %s, %s params, RF %d, %d epochs, %.0fs wall",
                 spec.name, test_acc, f" ({'; '.join(how)})" if how else "", test_loss,
                 f"best val acc {best_val:.4f}" if has_val else "no validation split (data.val_size=0)",
                 f"{report.params:,}", report.rf, len(history), wall)
        return TrainResult(best_val, test_acc, test_loss, len(history), report.params, report.rf, report.macs,
                           wall, tracker.run_id, history)
    except Pruned:
        status = "KILLED"
        tracker.set_tags({"state": "PRUNED"})
        raise
    except BaseException as e:
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            status = "KILLED"  # Ctrl-C / SIGTERM: not a failure of the spec, but not complete either
        if tracker.enabled and tracker.run_id:
            tracker.set_tags({"error": f"{type(e).__name__}: {e}"[:4000] or "interrupted", "state": "FAIL"})
        raise
    finally:
        if status == "FINISHED":
            tracker.set_tags({"state": "COMPLETE"})
        tracker.end(status)


# ------------------------------------------------------------------ Hydra entry
_DATA_CACHE: dict[str, Any] = {}


def _cached_data(cfg, base_dir: Path):
    """A sweep process loads its dataset once and reuses it across trials."""
    import json

    from omegaconf import OmegaConf

    from .data import load_data

    dc = OmegaConf.to_container(cfg.data, resolve=True)
    key = json.dumps(dc, sort_keys=True, default=str)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = load_data(dc, base_dir)
    return _DATA_CACHE[key]


def _multirun_parent(cfg, sweep_dir: str) -> str | None:
    """Plain Hydra multirun (basic sweeper): one MLflow parent run per multirun directory."""
    from omegaconf import OmegaConf

    from .tracking import make_tracker

    tr = make_tracker(OmegaConf.to_container(cfg.tracking, resolve=True))
    if not tr.enabled:
        return None
    key = str(Path(sweep_dir).resolve())
    found = tr.client.search_runs([tr.experiment_id], filter_string=f"tags.`archsearch.multirun` = '{key}'",
                                  max_results=1)
    if found:
        return found[0].info.run_id
    tr.start(name=f"multirun {Path(sweep_dir).name}", tags={"archsearch.multirun": key, "archsearch.role": "parent"})
    tr.end("FINISHED")
    return tr.run_id


def _record_rejection(cfg, e: BudgetRejected) -> None:
    """Plain multirun: the refused job still shows up under the multirun's parent run."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from .tracking import make_tracker, record_rejected

    hc = HydraConfig.get()
    tr = make_tracker(OmegaConf.to_container(cfg.tracking, resolve=True))
    rep = analyze(e.spec)
    overrides = dict(o.split("=", 1) for o in hc.overrides.task if "=" in o)
    record_rejected(tr, _multirun_parent(cfg, hc.sweep.dir), f"{e.spec.name} (rejected)",
                    [v.message for v in e.violations],
                    {**overrides, "model.params": rep.params, "model.rf": rep.rf, "model.macs": rep.macs},
                    {"model": e.spec.name, "multirun_job": hc.job.num})


def _task(cfg) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    out_dir = hc.runtime.output_dir
    base_dir = Path(os.environ.get("ARCHSEARCH_BASE", os.getcwd()))
    tc = cfg.get("trial")
    hook = started = parent = None
    tags: dict[str, Any] = {}
    if tc:  # launched by the archsearch sweeper
        from .study import pruning_hook

        hook, started = pruning_hook(tc, int(cfg.trainer.epochs))
        parent = tc.get("parent_run_id")
        tags = {"trial_number": tc.number, "study": tc.study_name}
    elif hc.mode == RunMode.MULTIRUN:
        gate(cfg)  # refuse before _cached_data below loads the dataset (train() gates only after)
        parent = _multirun_parent(cfg, hc.sweep.dir)
        tags = {"multirun_job": hc.job.num}
    res = train(cfg, out_dir, epoch_hook=hook, parent_run_id=parent, run_tags=tags,
                data=_cached_data(cfg, base_dir) if hc.mode == RunMode.MULTIRUN else None, run_started=started)
    return res.val_acc


def main() -> None:
    """Console entry: user mistakes -> one line on stderr; exit 1 for budget, 2 for bad input."""
    import signal

    import hydra

    from .augment import AugError
    from .config import CONF_DIR
    from .data import DataError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # SIGTERM (kill, a scheduler's pre-emption) unwinds like Ctrl-C: the MLflow run is closed as KILLED
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        check_choices([a for a in sys.argv[1:] if not a.startswith("-")])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)

    @hydra.main(version_base=None, config_path=str(CONF_DIR), config_name="config")
    def _entry(cfg) -> float | None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        multirun = HydraConfig.get().mode == RunMode.MULTIRUN
        try:
            return _task(cfg)
        except BudgetRejected as e:
            print(f"REJECTED {e.spec.name}: {len(e.violations)} budget violation(s)", file=sys.stderr)
            for v in e.violations:
                print(f"  - {v.message}", file=sys.stderr)
            if multirun:
                _record_rejection(cfg, e)
                return None  # the other jobs of a plain multirun go on
            sys.exit(1)
        except Pruned:
            raise
        except (SpecError, ConfigError, BudgetError, DataError, AugError, NonFiniteLoss) as e:
            if multirun:
                raise  # the sweeper records the failure and goes on
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2 if not isinstance(e, NonFiniteLoss) else 3)

    _entry()


if __name__ == "__main__":
    # run the canonical module, not __main__, so exception classes (Pruned, ...) are one
    from archsearch.train import main as _main

    _main()
