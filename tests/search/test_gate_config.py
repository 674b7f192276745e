"""The sweep's budget gate reads the same model and budget as a Hydra composition would give it,
without composing each candidate; where it cannot be sure of that, Hydra composes."""

import pytest
from omegaconf import OmegaConf

from archsearch.config.compose import compose, compose_with_hydra
from archsearch.config.gate import verdict
from archsearch.search.gate_config import GateConfigs

BASE = ["model=res_dilated", "budget.max_params=150000"]


def _gate_configs(calls: list):
    def hydra(overrides):
        calls.append(list(overrides))
        return compose_with_hydra("config", overrides)

    return GateConfigs(hydra, BASE)


def _sections(cfg):
    return {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("model", "budget")}


@pytest.mark.parametrize("sampled", [
    ["model.w1=48", "model.stages.c1.1.body.0.body.0.op=sepconv", "model.stages.c1.1.body.0.body.1.d=3"],
    ["model.depth=1", "model.w3=128", "optim.lr=0.05", "budget.max_params=90000"],  # over the cap: rejected alike
    ["model.layer_defaults.act=gelu", "budget.min_rf=60"],
])
def test_the_gate_reads_what_hydra_composes_and_hydra_composes_the_base_once(sampled):
    calls: list = []
    gc = _gate_configs(calls)
    fast = gc.get(sampled)
    assert fast is not None and gc.get(sampled) is not None
    assert calls == [BASE]  # one composition for any number of candidates
    slow = compose("config", BASE + sampled)
    assert _sections(fast) == _sections(slow)
    (_, a1, v1), (_, a2, v2) = verdict(fast), verdict(slow)
    assert (a1.params, a1.rf, a1.macs) == (a2.params, a2.rf, a2.macs)
    assert [v.message for v in v1] == [v.message for v in v2]


@pytest.mark.parametrize("sampled", [
    ["model=compact"],                         # a config group: another defaults list
    ["model.w1=48", "+model.extra=1"],         # adds a key
    ["~budget.min_rf"],                        # deletes one
    ["model.no_such_key=3"],                   # Hydra's own message says why it cannot
    ["model.w1=${oc.env:NOPE_NOT_SET}"],       # does not resolve here
])
def test_anything_but_plain_values_is_left_to_hydra(sampled):
    calls: list = []
    gc = _gate_configs(calls)
    assert gc.get(["model.w1=40"]) is not None
    assert gc.get(sampled) is None
    assert (gc.fast, gc.composed) == (1, 1)
