"""trainer.amp / trainer.channels_last = auto: decided by a timed probe, cached, logged."""

import json

import pytest
from omegaconf import OmegaConf

from archsearch.config import ConfigError


def _tiny_model():
    from archsearch import build_model, load_spec

    return build_model(load_spec("dilated_sep", ["model.wide=8", "model.narrow=8"]))


def _choose(tcfg, rates=None, calls=None, spec_key="k"):
    import torch

    from archsearch.precision import choose_precision

    def fake_probe(model, device, cands, *a, **k):
        calls.append(cands)
        return rates

    return choose_precision(OmegaConf.create(tcfg), torch.device("cpu"), _tiny_model(), spec_key, 16, (3, 32, 32),
                            10, **({"probe_fn": fake_probe} if rates is not None else {}))


def test_auto_times_every_candidate_and_takes_the_fastest_finite_one(tmp_path, monkeypatch):
    import torch

    from archsearch.precision import probe

    monkeypatch.setenv("ARCHSEARCH_CACHE_DIR", str(tmp_path))
    model = _tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    cands = [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]
    rates = probe(model, torch.device("cpu"), cands, 16, (3, 32, 32), 10, steps=2)
    assert set(rates) == {"fp32 NCHW", "fp32 channels_last", "bf16 NCHW", "bf16 channels_last"}
    assert all(v > 0 for v in rates.values())
    # the probe trains copies: the run's model and its random stream are untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())
    p = _choose({"amp": "auto", "channels_last": "auto"})
    assert p.source == "probe" and set(p.rates) == set(rates)
    chosen = f"{'fp32' if p.amp is None else 'bf16'} {'channels_last' if p.channels_last else 'NCHW'}"
    assert p.rates[chosen] >= p.rates["fp32 NCHW"]  # never slower than fp32 NCHW


def test_auto_never_picks_slower_than_fp32_nchw_nor_a_non_finite_candidate(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHSEARCH_CACHE_DIR", str(tmp_path))
    calls = []
    # bf16 channels_last would be fastest but gave non-finite gradients (rate 0); within 3% is noise
    rates = {"fp32 NCHW": 100.0, "fp32 channels_last": 102.0, "bf16 NCHW": 90.0, "bf16 channels_last": 0.0}
    p = _choose({"amp": "auto", "channels_last": "auto"}, rates, calls)
    assert p.amp is None and p.channels_last is False
    rates = {"fp32 NCHW": 100.0, "fp32 channels_last": 140.0, "bf16 NCHW": 90.0, "bf16 channels_last": 0.0}
    p = _choose({"amp": "auto", "channels_last": "auto"}, rates, calls, spec_key="other")
    assert p.amp is None and p.channels_last is True
    assert "fp32 channels_last 140" in p.describe() and p.tags()["precision.source"] == "probe"


def test_the_choice_is_cached_per_spec_and_set_values_skip_the_probe(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("ARCHSEARCH_CACHE_DIR", str(tmp_path))
    calls = []
    rates = {"fp32 NCHW": 100.0, "fp32 channels_last": 90.0, "bf16 NCHW": 300.0, "bf16 channels_last": 200.0}
    first = _choose({"amp": "auto", "channels_last": "auto"}, rates, calls)
    again = _choose({"amp": "auto", "channels_last": "auto"}, rates, calls)
    assert len(calls) == 1 and first.source == "probe" and again.source == "cache"
    assert again.amp == torch.bfloat16 and again.channels_last is False
    entry = json.loads((tmp_path / "precision.json").read_text())
    assert len(entry) == 1 and "torch " + torch.__version__ in next(iter(entry))
    # amp fixed: only the layout is timed; both fixed: no probe at all
    _choose({"amp": "off", "channels_last": "auto"}, {"fp32 NCHW": 1.0, "fp32 channels_last": 2.0}, calls)
    assert calls[-1] == [("fp32", False), ("fp32", True)]
    p = _choose({"amp": "bf16", "channels_last": True}, rates, calls)
    assert len(calls) == 2 and p.amp == torch.bfloat16 and p.channels_last and p.source == "set"


def test_a_damaged_cache_is_probed_again(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHSEARCH_CACHE_DIR", str(tmp_path))
    (tmp_path / "precision.json").write_text("{not json")
    calls = []
    p = _choose({"amp": "auto", "channels_last": "auto"}, {"fp32 NCHW": 1.0}, calls)
    assert p.source == "probe" and json.loads((tmp_path / "precision.json").read_text())


@pytest.mark.parametrize("key,value,message", [
    ("channels_last", "sometimes", "trainer.channels_last: must be one of auto, true, false"),
    ("amp", "fp8", "trainer.amp: unknown mode 'fp8'; choose one of auto, bf16, fp16, off"),
])
def test_bad_precision_settings_are_one_line(key, value, message):
    with pytest.raises(ConfigError, match=message):
        _choose({"amp": "auto", "channels_last": "auto", key: value}, {}, [])
