"""The optimiser and the weight average: weight decay that spares norm and bias, EMA's ramped decay."""

from archsearch.config.compose import compose, spec_from_cfg
from archsearch.training.optim import WeightEMA, make_optimizer

# torch (and archsearch.grammar.build, which imports it) is imported in the tests that use it:
# pytest imports every test module to collect it, and collecting stays quick


def test_ema_follows_the_weights_with_a_ramped_decay():
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = WeightEMA(model, 0.9)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.0)
        ema_w = ema.model[0].weight.clone()
        model[1].running_mean.fill_(1.0)
    ema.update()  # decay min(0.9, 2/11)
    d = 2 / 11
    assert torch.allclose(ema.model[0].weight, ema_w * d)
    assert torch.allclose(ema.model[1].running_mean, torch.full((2,), 1 - d))
    for _ in range(200):
        ema.update()
    assert ema.model[0].weight.abs().max() < 1e-6 and ema.updates == 201


def test_weight_decay_can_spare_norm_and_bias():
    from archsearch.grammar.build import build_model

    cfg = compose("config", ["optim.decay_norm_and_bias=false"])
    model = build_model(spec_from_cfg(cfg.model))
    opt = make_optimizer(cfg.optim, model)
    decayed, spared = opt.param_groups
    assert decayed["weight_decay"] == 5e-4 and spared["weight_decay"] == 0.0
    assert all(p.ndim == 4 or p.ndim == 2 for p in decayed["params"])  # conv and linear weights
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == 181_984
    assert len(make_optimizer(compose("config", []).optim, model).param_groups) == 1
