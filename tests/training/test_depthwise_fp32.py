"""trainer.amp=bf16-dw-fp32: bf16 autocast with the depthwise convolutions kept in fp32."""

import pickle

import pytest
from omegaconf import OmegaConf

from archsearch import build_model, load_spec
from archsearch.config.compose import compose
from archsearch.training.depthwise_fp32 import DW_FP32, depthwise_convs, keep_depthwise_fp32
from archsearch.training.job import train
from archsearch.training.kernel_check import check_kernels
from archsearch.training.precision import candidates, choose_precision, probe


def _branchy():
    return build_model(load_spec("res_branch", ["model.w1=8", "model.w2=16", "model.w3=16"]))


def _dtypes(model, x, amp_dtype):
    """The output dtype of each conv of ``model`` on ``x`` under autocast: {depthwise?: {dtypes}}."""
    import torch
    import torch.nn as nn

    seen: dict[bool, set] = {True: set(), False: set()}
    hooks = [m.register_forward_hook(lambda m, a, out: seen[m.groups > 1 and m.groups == m.in_channels].add(out.dtype))
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.autocast("cpu", dtype=amp_dtype):
        model(x)
    for h in hooks:
        h.remove()
    return seen


def test_depthwise_convs_run_in_fp32_and_the_rest_in_bf16_with_the_same_parameters():
    import torch

    model = _branchy()
    keys = list(model.state_dict())
    assert depthwise_convs(model) == 8
    x = torch.randn(4, 3, 32, 32)
    assert _dtypes(model, x, torch.bfloat16) == {True: {torch.bfloat16}, False: {torch.bfloat16}}
    assert keep_depthwise_fp32(model) is model and keep_depthwise_fp32(model) is model  # in place, idempotent
    assert _dtypes(model, x, torch.bfloat16) == {True: {torch.float32}, False: {torch.bfloat16}}
    assert list(model.state_dict()) == keys  # checkpoints load either way
    # without autocast nothing changes: the same network, the same fp32 output
    plain = _branchy()
    plain.load_state_dict(model.state_dict())
    model.eval(), plain.eval()
    with torch.no_grad():
        assert torch.equal(model(x), plain(x))
    # the logged MLflow model is the pickled module: the fp32 class is found again by name
    again = pickle.loads(pickle.dumps(model))
    assert _dtypes(again.train(), x, torch.bfloat16) == {True: {torch.float32}, False: {torch.bfloat16}}


def test_auto_times_it_on_a_cpu_only_for_networks_with_depthwise_convs(bf16_cpu):
    import torch

    cpu = torch.device("cpu")
    with_dw = candidates(cpu, "auto", None, depthwise_convs(_branchy()))
    assert (DW_FP32, False) in with_dw and (DW_FP32, True) in with_dw
    resnet = build_model(load_spec("resnet_s10"))
    assert not any(a == DW_FP32 for a, _ in candidates(cpu, "auto", None, depthwise_convs(resnet)))
    assert candidates(cpu, DW_FP32, True, 8) == [(DW_FP32, True)]  # set by hand: only it


def test_the_probe_times_it_and_its_kernels_check_against_fp32():
    import torch

    model = _branchy()
    rates = probe(model, torch.device("cpu"), [("fp32", False), (DW_FP32, True)], 8, (3, 32, 32), 10, steps=1)
    assert set(rates) == {"fp32 NCHW", f"{DW_FP32} channels_last"} and all(v > 0 for v in rates.values())
    assert type(next(m for m in model.modules() if getattr(m, "groups", 1) > 1)).__name__ == "Conv2d"  # untouched
    assert check_kernels(model, torch.device("cpu"), DW_FP32, True, 8, (3, 32, 32)) is None


def test_an_explicit_bf16_dw_fp32_trains_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHSEARCH_CACHE_DIR", str(tmp_path / "cache"))
    p = choose_precision(OmegaConf.create({"amp": DW_FP32, "channels_last": "true"}), __import__("torch").device("cpu"),
                         _branchy(), "k", 8, (3, 32, 32), 10)
    assert p.depthwise_fp32 and p.amp_short == DW_FP32 and p.label == f"{DW_FP32} channels_last"
    assert p.tags()["amp"] == "bfloat16, depthwise fp32"
    cfg = compose("config", ["model=res_branch", "model.w1=8", "model.w2=16", "model.w3=16", "data=synthetic",
                             "data.n_train=96", "data.n_test=32", "data.val_size=32", "trainer.batch_size=32",
                             "trainer.epochs=1", f"trainer.amp={DW_FP32}", "trainer.channels_last=true",
                             "trainer.compile=false", "trainer.progress=false", "tracking=none", "trainer.tta=none"])
    res = train(cfg, tmp_path / "out")
    assert res.epochs == 1 and res.test_acc == res.test_acc  # trained to the end, finite


@pytest.mark.parametrize("amp", ["bf16-dw", "dw-fp32"])
def test_a_mistyped_mode_names_the_choices(amp):
    from archsearch.errors import ConfigError

    with pytest.raises(ConfigError, match=f"trainer.amp: unknown mode '{amp}'; choose one of auto, bf16, fp16, "
                                          f"{DW_FP32}, off"):
        choose_precision(OmegaConf.create({"amp": amp, "channels_last": "auto"}), __import__("torch").device("cpu"),
                         _branchy(), "k", 8, (3, 32, 32), 10)
