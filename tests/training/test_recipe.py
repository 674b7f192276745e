"""The fast-convergence recipe knobs: BatchNorm/bias lr scale, BatchNorm momentum, a whitened
(optionally frozen) first conv, alternating flips. CPU, synthetic data."""

import subprocess
import sys

import numpy as np
import pytest
import yaml
from helpers import TINY_MODEL, cfg_for, runs

from archsearch.config.compose import compose, spec_from_cfg
from archsearch.config.paths import available, config_file
from archsearch.tracking.tracker import flatten
from archsearch.training.augment import split_flip
from archsearch.training.batches import BatchAug, EpochBatches
from archsearch.training.job import train
from archsearch.training.optim import make_optimizer, make_scheduler
from archsearch.training.recipe import apply_recipe

# torch (and archsearch.grammar.build, which imports it) is imported in the tests that use it: pytest
# imports every test module to collect it, and collecting stays quick


def _model(*overrides):
    from archsearch.grammar.build import build_model

    cfg = compose("config", list(overrides))
    return cfg, build_model(spec_from_cfg(cfg.model))


def test_norm_lr_scale_raises_the_lr_of_batchnorm_and_biases_through_the_schedule():
    cfg, model = _model("optim.norm_lr_scale=8")
    opt = make_optimizer(cfg.optim, model)
    sched, _ = make_scheduler(cfg.sched, opt, float(cfg.optim.lr), epochs=2, steps=10)
    weights, norms = opt.param_groups
    assert all(p.ndim > 1 for p in weights["params"]) and all(p.ndim == 1 for p in norms["params"])
    for _ in range(6):  # into the warm-up: both groups move, in the same ratio
        opt.step()
        sched.step()
    assert norms["lr"] == pytest.approx(8 * weights["lr"])
    assert norms["weight_decay"] == weights["weight_decay"] == 5e-4  # decay stays as configured


def test_bn_momentum_and_whitened_frozen_stem_apply_to_the_built_model():
    import torch

    cfg, model = _model("trainer.bn_momentum=0.4", "trainer.stem_init=whiten_frozen")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    before = sum(p.numel() for p in model.parameters())
    msg = apply_recipe(model, cfg.trainer, x, [120.0] * 3, [60.0] * 3, seed=0)
    assert "momentum 0.4" in msg and "frozen" in msg
    assert all(m.momentum == 0.4 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert not conv.weight.requires_grad and sum(p.numel() for p in model.parameters()) == before
    w = conv.weight.detach().view(32, -1).double()
    assert torch.allclose(w[0], -w[1]) and torch.allclose(w[14], -w[15])  # each filter with its negation
    # the filters whiten the patches they came from: the response covariance is ~identity
    xs = (torch.from_numpy(x).permute(0, 3, 1, 2).double() - 120) / 60
    cols = torch.nn.functional.unfold(xs, 3).transpose(1, 2).reshape(-1, 27)
    resp = (cols - cols.mean(0)) @ w[0:32:2].T
    cov = resp.T @ resp / len(resp)
    assert torch.allclose(torch.diagonal(cov), torch.ones(16, dtype=torch.float64), atol=0.05)


def test_alternating_flip_shows_every_image_both_ways_in_two_epochs():
    spec, alternate = split_flip([{"HorizontalFlip": {"p": 0.5}}], "alternate", "aug.train")
    assert spec == [] and alternate
    x = np.zeros((16, 32, 32, 3), np.uint8)
    x[:, :, :16] = 255  # left half white: a flipped image has a white right half
    ds = BatchAug(x, np.arange(16), None, None, alternate=(True, False), seed=3)
    sampler = EpochBatches(16, 16, seed=0)
    flipped = []
    for epoch in range(3):
        sampler.epoch = epoch
        (item,) = list(sampler)
        xb, yb = ds[item]
        f = np.zeros(16, bool)
        f[yb.numpy()] = xb.numpy()[:, 0, -1, 0] == 255
        flipped.append(f)
    assert 4 <= flipped[0].sum() <= 12  # a random half to start with
    assert (flipped[0] != flipped[1]).all() and (flipped[0] == flipped[2]).all()


def test_recipe_knobs_train_end_to_end(tmp_path):
    res = train(cfg_for(tmp_path, *TINY_MODEL, "trainer.epochs=2", "optim.norm_lr_scale=4", "trainer.bn_momentum=0.3",
                        "trainer.stem_init=whiten", "aug.flip=alternate"), tmp_path / "out")
    assert res.test_acc > 0.3
    row = runs(tmp_path).iloc[0]
    assert row["params.aug.flip"] == "alternate" and row["params.trainer.stem_init"] == "whiten"


@pytest.mark.parametrize("override, message", [
    ("optim.norm_lr_scale=0", "error: optim.norm_lr_scale: the lr multiplier for BatchNorm and biases must be"),
    ("trainer.bn_momentum=2", "error: trainer.bn_momentum: BatchNorm's running-statistics momentum must be"),
    ("trainer.stem_init=zca", "error: trainer.stem_init: unknown value 'zca'; choose one of default, whiten, "
                              "whiten_frozen"),
    ("aug.flip=sideways", "error: aug.flip: unknown value 'sideways'; choose one of random, alternate"),
])
def test_cli_bad_recipe_knob_is_one_line(tmp_path, override, message):
    p = subprocess.run([sys.executable, "-m", "archsearch.train", override, "data=synthetic", "data.n_train=64",
                        "data.n_test=32", "data.val_size=16", "tracking=none", *TINY_MODEL, "trainer.epochs=1",
                        "trainer.amp=off", "trainer.channels_last=false"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith(message)
    assert "Traceback" not in p.stderr


def test_a_worker_forked_after_the_sample_grid_does_not_hang(tmp_path):
    """The run's grid of augmented samples runs OpenCV in the training process before the
    DataLoader forks its worker; a forked worker must still augment (it used to wait forever
    on OpenCV's thread-pool lock)."""
    p = subprocess.run([sys.executable, "-m", "archsearch.train", "data=synthetic", "data.n_train=700",
                        "data.n_test=64", "data.val_size=64", "trainer.workers=1", "trainer.epochs=1",
                        "trainer.progress=false", "trainer.tta=none",
                        "tracking.log_model=false", *TINY_MODEL],  # MLflow: tmp_path/mlruns, schema ready
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "done dilated_sep" in p.stderr + p.stdout


@pytest.mark.parametrize("name", available("recipe"))
def test_every_shipped_recipe_composes_to_the_values_its_file_says(name):
    from omegaconf import OmegaConf

    written = flatten(yaml.safe_load(config_file("recipe", name).read_text()) or {})
    composed = flatten(OmegaConf.to_container(compose("config", [f"recipe={name}"])))
    for key, value in written.items():
        got = composed.get(key)
        assert got == value, f"recipe={name}: {key} is {got!r}, the file says {value!r}"
    if name == "default":
        assert composed == flatten(OmegaConf.to_container(compose("config", [])))
