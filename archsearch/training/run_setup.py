"""Everything a training run does before its first epoch: the recipe's knobs parsed (and refused
in one line before torch is imported or data loaded), then the setup, in an order that keeps runs
reproducible: seed, device, data, augmentation, model, recipe, precision, compilation, engine.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from archsearch.config.paths import base_dir
from archsearch.errors import ConfigError
from archsearch.grammar.analysis import Analysis
from archsearch.grammar.spec import ModelSpec, spec_hash
from archsearch.training import data as datasets
from archsearch.training.augment import build_pipeline, split_flip
from archsearch.training.compilation import choose_compile, compile_setting
from archsearch.training.engine import Engine
from archsearch.training.evaluate import parse_tta
from archsearch.training.kernel_check import kernel_check_setting
from archsearch.training.mixing import MixSpec, parse_mix
from archsearch.training.optim import effective_lr, parse_ema, parse_norm_knobs
from archsearch.training.precision import choose_precision, pick_device
from archsearch.training.recipe import apply_recipe, check_recipe

__all__ = ["Knobs", "RunSetup", "cooldown_epochs", "parse_knobs", "setup_run"]

log = logging.getLogger("archsearch")

# torch (and archsearch.grammar.build, which imports it) is imported inside setup_run:
# archsearch.train imports the training modules at its top and refuses a mistyped knob before torch
# is loaded, and `from archsearch import fit` loads torch only when called


@dataclass
class RunSetup:
    """What the run's epochs, its MLflow record and its result are made from."""
    spec: ModelSpec
    analysis: Analysis
    data: Any
    engine: Engine
    epochs: int
    tta: str
    out: Path
    base_dir: Path
    pipeline: Any
    spec_hash: str


@dataclass(frozen=True)
class Knobs:
    """The recipe's knobs, parsed: the augmentation lists as built (``aug.flip`` applied) and
    whether each phase flips alternate epochs, the cool-down epochs, EMA decay, TTA, batch mixing
    and the peak lr in use (``optim.lr`` scaled to the batch size if ``optim.batch_scaling`` says so)."""
    train_spec: Any
    alt_train: bool
    cool_spec: Any
    alt_cool: bool
    cool: int
    ema_decay: float | None
    tta: str
    mix: MixSpec | None = None
    lr: float = 0.0


def cooldown_epochs(acfg: dict, epochs: int) -> int:
    """Epochs at the end of the run on the cool-down pipeline: ``aug.cooldown_fraction`` of the
    run, rounded (a fraction, like OneCycle's warm-up, so a short run gets a short cool-down)."""
    v = acfg.get("cooldown_fraction") or 0
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
        raise ConfigError(f"aug.cooldown_fraction: must be a number in [0, 1) (the share of the epochs, at the end, "
                          f"trained on aug.cooldown); got {v!r}")
    return int(math.floor(v * epochs + 0.5))


def parse_knobs(cfg) -> Knobs:
    """The recipe's knobs (trainer, optim, aug), refused in one line before torch is imported,
    data loaded or an MLflow run started."""
    acfg = OmegaConf.to_container(cfg.aug, resolve=True)
    tcfg = cfg.trainer
    cool, ema_decay, tta = cooldown_epochs(acfg, int(tcfg.epochs)), parse_ema(tcfg), parse_tta(tcfg)
    check_recipe(tcfg)
    compile_setting(tcfg.get("compile", "false"))
    kernel_check_setting(tcfg)
    parse_norm_knobs(cfg.optim)
    flip = str(acfg.get("flip") or "random")
    train_spec, alt_train = split_flip(acfg.get("train"), flip, "aug.train")
    cool_spec, alt_cool = split_flip(acfg.get("cooldown"), flip, "aug.cooldown")
    return Knobs(train_spec, alt_train, cool_spec, alt_cool, cool, ema_decay, tta, parse_mix(acfg),
                 effective_lr(cfg.optim, int(tcfg.batch_size)))


def _seed_all(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _check_data(data, spec: ModelSpec, sweep_trial: bool) -> None:
    if data.num_classes != spec.num_classes:
        raise ConfigError(f"model.num_classes: the model outputs {spec.num_classes} classes but the data has "
                          f"{data.num_classes} ({', '.join(data.classes[:5])}...)")
    if data.image_shape != spec.input_shape:
        raise ConfigError(f"model.input_size: the model expects {spec.input_shape} images but the data has "
                          f"{data.image_shape}")
    if sweep_trial and len(data.x_val) == 0:
        raise ConfigError("data.val_size: a sweep trial is judged on validation accuracy; set data.val_size > 0")


def setup_run(cfg, spec: ModelSpec, analysis: Analysis, k: Knobs, out_dir, data, sweep_trial: bool) -> RunSetup:
    """Everything before the first epoch, in an order that keeps runs reproducible: the
    global RNGs are seeded first and only the model's initialisation draws from them."""
    import torch

    from archsearch.grammar.build import build_model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tcfg, base = cfg.trainer, base_dir()
    _seed_all(int(cfg.seed))
    if tcfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    device = pick_device(str(tcfg.device))
    epochs = int(tcfg.epochs)
    if device.type == "cuda" and not tcfg.deterministic:
        torch.backends.cudnn.benchmark = True
    if data is None:
        data = datasets.load_data(OmegaConf.to_container(cfg.data, resolve=True), base)
    _check_data(data, spec, sweep_trial)
    mean_px = [m * 255 for m in data.mean]
    pipeline = build_pipeline(k.train_spec, mean_px)
    cool_pipeline = build_pipeline(k.cool_spec, mean_px, where="aug.cooldown") if k.cool else None
    model, sh = build_model(spec), spec_hash(spec)
    applied = apply_recipe(model, tcfg, data.x_train, mean_px, [s * 255 for s in data.std], int(cfg.seed))
    if applied:
        log.info("recipe: %s", applied)
    precision = choose_precision(tcfg, device, model, sh, int(tcfg.batch_size), spec.input_shape, spec.num_classes)
    model = precision.set_up(model).to(device)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    compiled = choose_compile(tcfg.get("compile", "false"), model, precision, sh, int(tcfg.batch_size),
                              spec.input_shape, spec.num_classes, images=epochs * len(data.x_train),
                              check=kernel_check_setting(tcfg))
    engine = Engine(cfg=cfg, model=model, data=data, precision=precision, pipelines=(pipeline, cool_pipeline),
                    epochs=epochs, cooldown_epochs=k.cool, ema_decay=k.ema_decay,
                    alternate_flip=(k.alt_train, k.alt_cool and bool(k.cool)), compiled=compiled, mix=k.mix)
    if k.lr != float(cfg.optim.lr):
        log.info("optim: peak lr %g (optim.lr %g for a batch of %s, scaled %s to batch %d)", k.lr, float(cfg.optim.lr),
                 cfg.optim.get("base_batch_size", 128), cfg.optim.batch_scaling, int(tcfg.batch_size))
    if k.mix:
        log.info("aug.mix: %s", ", ".join(f"{n} alpha {a:g}" for n, a in (("mixup", k.mix.mixup_alpha),
                 ("cutmix", k.mix.cutmix_alpha)) if a > 0) + f", {k.mix.prob:.0%} of batches"
                 + ("" if k.mix.cooldown or not k.cool else f", not in the {k.cool} cool-down epochs"))
    return RunSetup(spec, analysis, data, engine, epochs, k.tta, out, base, pipeline, sh)
