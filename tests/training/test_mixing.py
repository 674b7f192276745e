"""Batch mixing (aug.mix: mixup, cutmix), the peak lr scaled to the batch size, and recipe files
that bring a whole recipe with one override. CPU, synthetic data."""

import numpy as np
import pytest
from helpers import FIXED, TINY_MODEL, cfg_for, runs

from archsearch.config.compose import compose
from archsearch.errors import ConfigError
from archsearch.training import engine as engine_mod
from archsearch.training.job import train
from archsearch.training.mixing import MixSpec, mix_batch, parse_mix
from archsearch.training.optim import effective_lr

# torch is imported in the tests that use it: pytest imports every test module to collect it


def test_mixup_blends_each_image_with_its_partner_in_the_drawn_share():
    import torch

    spec = MixSpec(mixup_alpha=0.4)
    d = spec.draw(spec.draws(seed=0, epoch=0), 8, 32, 32)
    assert d.kind == "mixup" and 0 < d.lam < 1 and sorted(d.perm) == list(range(8))
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8)
    mixed, partner = mix_batch(x, y, d)
    assert torch.allclose(mixed, d.lam * x + (1 - d.lam) * x[d.perm], atol=1e-6)
    assert partner.tolist() == d.perm.tolist()


def test_cutmix_pastes_a_box_whose_area_is_the_partners_share():
    import torch

    spec = MixSpec(cutmix_alpha=1.0)
    rng = spec.draws(seed=3, epoch=1)
    for _ in range(20):
        d = spec.draw(rng, 4, 32, 32)
        y0, y1, x0, x1 = d.box
        assert d.lam == pytest.approx(1 - (y1 - y0) * (x1 - x0) / 1024)
        x = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 32, 32)
        mixed, _ = mix_batch(x, torch.arange(4), d)
        from_partner = (mixed != x).float().mean().item()  # image i holds the value i; partners differ
        moved = sum(d.perm[i] != i for i in range(4)) / 4
        assert from_partner == pytest.approx((1 - d.lam) * moved, abs=1e-6)


def test_draws_repeat_for_the_same_seed_and_epoch_and_respect_prob():
    spec = MixSpec(mixup_alpha=0.2, cutmix_alpha=1.0, prob=0.5)
    def ten(rng):
        return [(d.kind, d.lam, d.perm.tolist()) if d else None for d in (spec.draw(rng, 16, 32, 32) for _ in range(10))]

    assert ten(spec.draws(5, 2)) == ten(spec.draws(5, 2)) != ten(spec.draws(5, 3))
    rng = spec.draws(5, 3)
    draws = [spec.draw(rng, 16, 32, 32) for _ in range(400)]
    mixed = [d for d in draws if d is not None]
    assert 0.4 < len(mixed) / 400 < 0.6
    assert {d.kind for d in mixed} == {"mixup", "cutmix"}  # both alphas > 0: one or the other


@pytest.mark.parametrize("mix, field", [({"mixup_alpha": -1}, "aug.mix.mixup_alpha"), ({"prob": 2}, "aug.mix.prob"),
                                        ({"alpha": 0.2}, "aug.mix.alpha"), ({"cooldown": "no"}, "aug.mix.cooldown")])
def test_bad_mix_settings_are_refused_naming_the_field(mix, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        parse_mix({"mix": mix})


def test_mix_is_off_by_default_and_when_both_alphas_are_zero():
    assert parse_mix(dict(compose("config", []).aug)) is None
    assert parse_mix({"mix": {"mixup_alpha": 0.0, "cutmix_alpha": 0.0}}) is None


def test_a_mixed_run_trains_and_leaves_the_cooldown_epochs_unmixed(tmp_path, monkeypatch):
    mixed_epochs = []
    real = engine_mod.mix_batch

    def spy(x, y, d):
        mixed_epochs.append(eng_epoch[0])
        return real(x, y, d)

    eng_epoch = [None]
    real_train_epoch = engine_mod.Engine.train_epoch

    def train_epoch(self, epoch):
        eng_epoch[0] = epoch
        return real_train_epoch(self, epoch)

    monkeypatch.setattr(engine_mod, "mix_batch", spy)
    monkeypatch.setattr(engine_mod.Engine, "train_epoch", train_epoch)
    cfg = cfg_for(tmp_path, *TINY_MODEL, *FIXED, "trainer.epochs=4", "aug.cooldown_fraction=0.5",
                  "aug.mix.mixup_alpha=0.2", "aug.mix.cutmix_alpha=1.0", "trainer.tta=none")
    res = train(cfg, tmp_path / "out")
    assert set(mixed_epochs) == {0, 1}  # the last 2 of 4 epochs are the cool-down
    assert all(np.isfinite(h["train_loss"]) for h in res.history)
    assert runs(tmp_path)["params.aug.mix.mixup_alpha"].iloc[0] == "0.2"


def test_peak_lr_scales_with_the_batch_size_when_asked():
    cfg = compose("config", ["optim.lr=0.1", "optim.base_batch_size=128"]).optim
    assert effective_lr(cfg, 512) == 0.1  # batch_scaling: none, the default: optim.lr as written
    cfg.batch_scaling = "linear"
    assert effective_lr(cfg, 512) == pytest.approx(0.4)
    cfg.batch_scaling = "sqrt"
    assert effective_lr(cfg, 512) == pytest.approx(0.2)
    cfg.batch_scaling = "square"
    with pytest.raises(ConfigError, match=r"optim\.batch_scaling.*none, linear, sqrt"):
        effective_lr(cfg, 512)


def test_a_run_trains_at_the_scaled_lr(tmp_path):
    cfg = cfg_for(tmp_path, *TINY_MODEL, *FIXED, "trainer.epochs=1", "sched=constant", "optim.batch_scaling=linear",
                  "optim.base_batch_size=16", "trainer.tta=none")  # FAST: lr 0.05 at batch 32
    res = train(cfg, tmp_path / "out")
    assert res.history[-1]["lr"] == pytest.approx(0.1)


def test_a_recipe_file_sets_the_recipe_and_the_command_line_still_wins(tmp_path):
    (tmp_path / "recipe").mkdir()
    (tmp_path / "recipe" / "mine.yaml").write_text(
        "# @package _global_\noptim: {lr: 0.3, weight_decay: 1.0e-4}\ntrainer: {label_smoothing: 0.1}\n"
        "aug: {mix: {mixup_alpha: 0.3}}\n")
    sp = f"hydra.searchpath=[file://{tmp_path}]"
    cfg = compose("config", [sp, "recipe=mine"])
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.trainer.label_smoothing) == (0.3, 1e-4, 0.1)
    assert cfg.aug.mix.mixup_alpha == 0.3 and cfg.aug.mix.prob == 1.0  # the rest of aug.mix stays
    assert compose("config", [sp, "recipe=mine", "optim.lr=0.05"]).optim.lr == 0.05
