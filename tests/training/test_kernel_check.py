"""A precision, layout or compilation whose kernels compute a layer wrong on this machine is not
used by auto and refused when set (trainer.kernel_check). A faulty kernel is simulated here: the
dilated convolutions' weight gradient comes out 3x too large in bf16 channels_last, as the real
fault on an AVX-512-bf16 CPU without AMX (docs/engine.md) is garbage in exactly those layers."""

import pytest
from omegaconf import OmegaConf

from archsearch import build_model, load_spec
from archsearch.errors import ConfigError
from archsearch.training import compilation
from archsearch.training.compilation import choose_compile
from archsearch.training.kernel_check import Fault, check_kernels, distinct_layers
from archsearch.training.precision import Precision, choose_precision


def _model():
    return build_model(load_spec("dilated_sep", ["model.wide=16", "model.narrow=16"]))


@pytest.fixture
def faulty_dilated_bf16_cl(monkeypatch):
    """Dilated convs in bf16 autocast on channels_last input get a weight gradient 3x too large."""
    import torch

    class Triple(torch.autograd.Function):
        @staticmethod
        def forward(ctx, w):
            return w.view_as(w)

        @staticmethod
        def backward(ctx, g):
            return 3 * g

    original = torch.nn.Conv2d._conv_forward

    def conv_forward(self, x, weight, bias):
        cl = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        bf16 = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        if cl and bf16 and max(self.dilation) > 1:
            weight = Triple.apply(weight)
        return original(self, x, weight, bias)

    monkeypatch.setattr(torch.nn.Conv2d, "_conv_forward", conv_forward)


def test_right_kernels_pass_and_the_layers_are_checked_once_each():
    import torch

    model = _model()
    layers = distinct_layers(model, (3, 32, 32))
    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len({(repr(m), shape) for _, m, shape in layers}) == len(layers) <= len(convs)
    assert any(m.dilation == (2, 2) for _, m, _ in layers) and all(n.startswith("model.") for n, _, _ in layers)
    for amp, cl in (("fp32", True), ("bf16", False)):
        assert check_kernels(model, torch.device("cpu"), amp, cl, 32, (3, 32, 32)) is None


def test_a_wrong_weight_gradient_is_found_and_named_by_its_yaml_path(faulty_dilated_bf16_cl):
    import torch

    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fault = check_kernels(model, torch.device("cpu"), "bf16", True, 32, (3, 32, 32))
    assert fault is not None and fault.part == "weight gradient" and 1.5 < fault.error < 2.5
    assert fault.layer in ("model.layers[2]", "model.layers[5]") and "dilation 2" in fault.what and fault.more == 1
    assert f"bf16 channels_last computes layer {fault.layer} (conv 3x3 dilation 2, 16->16 channels on 16x" in fault.describe()
    assert "(and 1 more layer) wrong on this machine: its weight gradient is off by 2" in fault.describe()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert check_kernels(model, torch.device("cpu"), "bf16", False, 32, (3, 32, 32)) is None


def _choose(tcfg, tmp_path, monkeypatch, calls=None):
    import torch

    monkeypatch.setenv("ARCHSEARCH_CACHE_DIR", str(tmp_path))

    def fake_probe(model, device, cands, *a, **k):
        calls.append(cands)
        # bf16 fastest, then bf16 with the depthwise convs in fp32, then fp32; channels_last ahead of NCHW
        return {f"{a} {'channels_last' if cl else 'NCHW'}": 1000.0 * (1 + 2 * a.startswith("bf16") + cl)
                * (0.9 if a == "bf16-dw-fp32" else 1.0) for a, cl in cands}

    return choose_precision(OmegaConf.create(tcfg), torch.device("cpu"), _model(), "k", 32, (3, 32, 32), 10,
                            probe_fn=fake_probe)


def test_auto_passes_over_a_faulty_fastest_candidate_to_the_next_fastest(faulty_dilated_bf16_cl, tmp_path,
                                                                         monkeypatch, bf16_cpu):
    import json

    calls: list = []
    p = _choose({"amp": "auto", "channels_last": "auto"}, tmp_path, monkeypatch, calls)
    assert (p.amp_short, p.channels_last) == ("bf16", False)  # bf16 channels_last was faster, and is wrong
    assert "not used: bf16 channels_last computes layer model.layers[" in p.describe()
    checked = [k.rsplit("|", 1)[1] for k in json.loads((tmp_path / "precision.json").read_text()) if "|kernels " in k]
    # the faulty dilated convs are full convs: bf16 with the depthwise ones in fp32 has them wrong too
    assert "not used: bf16-dw-fp32 channels_last computes layer model.layers[" in p.describe()
    assert sorted(checked) == ["kernels bf16 NCHW", "kernels bf16 channels_last",
                               "kernels bf16-dw-fp32 channels_last"]  # the slower ones need no check
    again = _choose({"amp": "auto", "channels_last": "auto"}, tmp_path, monkeypatch, calls)
    assert again.source == "cache" and again.faults == p.faults and len(calls) == 1


def test_a_faulty_explicit_precision_is_refused_in_one_line_unless_the_check_is_off(
        faulty_dilated_bf16_cl, tmp_path, monkeypatch):
    with pytest.raises(ConfigError) as e:
        _choose({"amp": "bf16", "channels_last": True}, tmp_path, monkeypatch)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("trainer.amp=bf16 trainer.channels_last=true: ")
    assert "weight gradient" in msg and "trainer.channels_last=false" in msg and "trainer.kernel_check=false" in msg
    p = _choose({"amp": "bf16", "channels_last": True, "kernel_check": False}, tmp_path, monkeypatch)
    assert (p.amp_short, p.channels_last, p.source) == ("bf16", True, "set")
    with pytest.raises(ConfigError, match="trainer.kernel_check: must be true or false"):
        _choose({"amp": "bf16", "channels_last": True, "kernel_check": "maybe"}, tmp_path, monkeypatch)


def test_faulty_compiled_kernels_are_refused_when_set_and_not_used_by_auto(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("ARCHSEARCH_CACHE_DIR", str(tmp_path))
    fault = Fault("bf16 NCHW, compiled", "model.stages.c1[1]", "conv 3x3 dilation 2", "weight gradient", float("inf"))
    seen = []
    monkeypatch.setattr(compilation, "checked", lambda *a, **k: seen.append(k) or fault)
    model, precision = _model(), Precision(torch.device("cpu"), torch.bfloat16, False, rates={"bf16 NCHW": 1.0})
    with pytest.raises(ConfigError, match=r"^trainer.compile=true: bf16 NCHW, compiled computes .* not finite"):
        choose_compile("true", model, precision, "k", 32, (3, 32, 32), 10, images=10**6)

    def timed(compiled_rate):
        return lambda *a, **k: ("compiled-module", {"eager": 100.0, "compiled": compiled_rate}, 1.0)

    choice, module = choose_compile("auto", model, precision, "k", 32, (3, 32, 32), 10, images=10**6,
                                    probe_fn=timed(200.0))
    assert (choice.compiled, choice.source, module) == (False, "check", model) and "but bf16 NCHW" in choice.why
    assert seen == [{"compiled": True}, {"compiled": True}]
    choice, module = choose_compile("auto", model, precision, "k2", 32, (3, 32, 32), 10, images=10**6,
                                    probe_fn=timed(90.0))
    assert not choice.compiled and choice.source == "probe" and len(seen) == 2  # eager wins: nothing to check
    choice, _ = choose_compile("true", model, precision, "k", 32, (3, 32, 32), 10, images=10**6, check=False)
    assert choice.compiled and len(seen) == 2
