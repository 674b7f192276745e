"""Augmentation: pipelines built from YAML (refusals naming transform and argument), the shipped
era_s9 pipeline and its cool-down, and the cool-down epochs of a run."""

import numpy as np
import pytest
from omegaconf import OmegaConf

from archsearch.config.compose import compose
from archsearch.errors import AugError
from archsearch.training.augment import build_pipeline
from archsearch.training.batches import BatchAug, EpochBatches
from archsearch.training.run_setup import cooldown_epochs


def test_bad_augmentation_argument_names_transform_and_argument():
    with pytest.raises(AugError, match=r"aug.train\[0\].CoarseDropout: unknown argument 'max_holes'; valid arguments: "
                                       r"num_holes_range"):
        build_pipeline([{"CoarseDropout": {"max_holes": 2}}])
    with pytest.raises(AugError, match=r"unknown transform 'Mosaic'"):
        build_pipeline([{"Mosaic": {}}])
    with pytest.raises(AugError, match=r"aug.train\[0\].Affine: "):
        build_pipeline([{"Affine": {"rotate": "lots"}}])


def test_era_s9_pipeline_matches_the_assignment():
    cfg = compose("config", [])
    pipe = build_pipeline(OmegaConf.to_container(cfg.aug, resolve=True)["train"], [125.0, 123.0, 114.0])
    names = [type(t).__name__ for t in pipe.transforms]
    assert names == ["HorizontalFlip", "Affine", "CoarseDropout"]
    cd = pipe.transforms[2]
    assert (cd.num_holes_range, cd.hole_height_range, cd.hole_width_range) == ((1, 1), (16, 16), (16, 16))
    assert tuple(cd.fill) == (125.0, 123.0, 114.0)
    img = np.zeros((32, 32, 3), np.uint8)
    cd.p = 1.0
    out = cd(image=img)["image"]
    assert (out[..., 0] == 125).sum() == 16 * 16  # exactly one 16x16 hole in the dataset mean


def test_era_s9_cooldown_shifts_by_at_most_two_pixels():
    """The shipped cool-down is flips plus a random shift of up to 2 px: a lone bright pixel
    at the centre lands within 2 px of where a flip may put it, and not always in one place."""
    aug = OmegaConf.to_container(compose("config", []).aug, resolve=True)
    pipe = build_pipeline(aug["cooldown"], where="aug.cooldown")
    img = np.zeros((32, 32, 3), np.uint8)
    img[16, 16] = 255
    seen = set()
    for seed in range(60):
        pipe.set_random_seed(seed)
        out = pipe(image=img)["image"]
        assert out.shape == (32, 32, 3) and out.dtype == np.uint8
        ys, xs = np.nonzero(out[..., 0])
        assert len(ys) == 1  # moved, never duplicated by the reflect padding
        assert abs(ys[0] - 16) <= 2 and (abs(xs[0] - 16) <= 2 or abs(xs[0] - 15) <= 2)
        seen.add((int(ys[0]), int(xs[0])))
    assert len(seen) > 10


def test_cooldown_epochs_switch_to_the_light_pipeline():
    x = np.full((8, 32, 32, 3), 200, np.uint8)
    y = np.zeros(8, np.int64)
    blackout = build_pipeline([{"CoarseDropout": {"num_holes_range": [1, 1], "hole_height_range": [32, 32],
                                                  "hole_width_range": [32, 32], "fill": 0, "p": 1.0}}])
    ds = BatchAug(x, y, blackout, None)  # cool-down: no augmentation
    sampler = EpochBatches(8, 4, seed=0, cooldown_from=2)
    for epoch, expect in ((0, 0), (1, 0), (2, 200), (3, 200)):
        sampler.epoch = epoch
        for item in sampler:
            xb, _ = ds[item]
            assert int(xb.max()) == expect, epoch


def test_cooldown_scales_with_the_run_length():
    assert [cooldown_epochs({"cooldown_fraction": 0.167}, e) for e in (1, 2, 3, 6, 15, 30)] == [0, 0, 1, 1, 3, 5]
    assert cooldown_epochs({"cooldown_fraction": 0.267}, 30) == 8  # the shipped share
    assert cooldown_epochs({}, 30) == 0
