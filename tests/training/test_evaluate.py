"""Evaluation: test-time augmentation's views and how their predictions are combined."""

import numpy as np
import pytest

from archsearch.training.evaluate import TTA_VIEWS, evaluate, view

# torch is imported in the tests that use it: pytest imports every test module to collect it, and
# collecting stays quick


def test_flip_tta_averages_the_probabilities_of_image_and_mirror():
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 10))
    x = np.random.default_rng(0).integers(0, 255, (6, 4, 4, 3), dtype=np.uint8)
    y = np.arange(6) % 10
    mean, std = torch.zeros(1, 3, 1, 1), torch.full((1, 3, 1, 1), 1 / 255)  # evaluate() multiplies
    loss, acc, pred = evaluate(model, x, y, torch.device("cpu"), mean, std, None, False, keep=True, tta="flip")
    t = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        prob = (model(t).softmax(1) + model(t.flip(3)).softmax(1)) / 2
    assert pred.tolist() == prob.argmax(1).tolist()
    assert loss == pytest.approx(-prob.log()[torch.arange(6), torch.from_numpy(y)].mean().item(), rel=1e-5)
    assert acc == (prob.argmax(1).numpy() == y).mean()


def test_shifted_tta_views_move_the_image_by_one_pixel():
    import torch

    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).view(2, 3, 5, 5)
    assert len(TTA_VIEWS["flip_shift"]) == 10 and len(set(TTA_VIEWS["flip_shift"])) == 10
    v = view(x, 1, 1, False)  # content moves up-left: pixel (r, c) shows (r+1, c+1)
    assert v.shape == x.shape and torch.equal(v[..., :4, :4], x[..., 1:, 1:])
    v = view(x, -1, 1, True)
    assert torch.equal(v, view(x, -1, 1, False).flip(3))
    assert torch.equal(view(x, -1, 1, False)[..., :4, 1:], x[..., 1:, :4])
