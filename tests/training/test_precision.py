"""trainer.amp / trainer.channels_last = auto: decided by a timed probe, cached, logged."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from archsearch import build_model, load_spec
from archsearch.config.compose import compose
from archsearch.errors import ConfigError
from archsearch.training.compilation import choose_compile, probe_compile
from archsearch.training.job import train
from archsearch.training.precision import Precision, choose_precision, probe
from archsearch.training.probe_cache import OtherLoad

# torch is imported in the tests that use it: pytest imports every test module to collect it, and
# collecting stays quick


def _tiny_model():
    return build_model(load_spec("dilated_sep", ["model.wide=8", "model.narrow=8"]))


def _choose(tcfg, rates=None, calls=None, spec_key="k"):
    import torch

    def fake_probe(model, device, cands, *a, **k):
        calls.append(cands)
        return rates

    return choose_precision(OmegaConf.create(tcfg), torch.device("cpu"), _tiny_model(), spec_key, 16, (3, 32, 32),
                            10, **({"probe_fn": fake_probe} if rates is not None else {}))


def test_auto_times_every_candidate_and_takes_the_fastest_finite_one(tmp_path, monkeypatch, bf16_cpu):
    import torch

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
    # dilated_sep has a depthwise conv: auto also times bf16 with it in fp32
    assert p.source == "probe" and set(p.rates) == set(rates) | {"bf16-dw-fp32 NCHW", "bf16-dw-fp32 channels_last"}
    chosen = p.label
    assert p.rates[chosen] >= p.rates["fp32 NCHW"]  # never slower than fp32 NCHW


def test_auto_never_picks_slower_than_fp32_nchw_nor_a_non_finite_candidate(tmp_path, monkeypatch, bf16_cpu):
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
    assert "bf16 channels_last not finite (loss or gradients)" in p.describe()  # says why it lost, not "0 img/s"


def test_the_probe_stops_timing_a_candidate_that_cannot_win(monkeypatch):
    """On a CPU without native bf16 a bf16 step costs 10-20 fp32 steps (measured on an AVX2 EPYC): a
    candidate three times slower than the fastest after a round gets no more steps, yet keeps its rate;
    one within that factor (bf16 at half fp32's rate, as emulated on AVX-512) is timed to the end."""
    import torch

    from archsearch.training import precision

    seconds = {("fp32", False): 1.0, ("fp32", True): 0.8, ("bf16", False): 15.0, ("bf16", True): 1.9}
    steps_taken: dict = {}

    class FakeStepper:
        finite = True

        def __init__(self, model, device, amp, cl, *a, **k):
            self.key = (amp, cl)

        def step(self):
            steps_taken[self.key] = steps_taken.get(self.key, 0) + 1
            return seconds[self.key]

    monkeypatch.setattr(precision, "Stepper", FakeStepper)
    rates = probe(None, torch.device("cpu"), list(seconds), 16, (3, 32, 32), 10, steps=3)
    assert steps_taken == {("fp32", False): 4, ("fp32", True): 4, ("bf16", False): 2, ("bf16", True): 4}
    assert rates == {"fp32 NCHW": 16.0, "fp32 channels_last": 20.0, "bf16 NCHW": 16 / 15.0, "bf16 channels_last": 16 / 1.9}


@pytest.mark.parametrize("flags, warned", [(set(), True), ({"avx2", "fma"}, True), ({"avx512_bf16"}, False),
                                           ({"amx_bf16", "avx512f"}, False), (None, False)])
def test_an_explicit_bf16_is_kept_but_a_cpu_without_bf16_instructions_gets_a_warning(flags, warned, monkeypatch,
                                                                                       caplog):
    """On an AVX2 EPYC bf16 trained at a twentieth of fp32's rate: the user's bf16 stays (their word),
    and the log says what it costs there; no flags line (not x86) is no reason to warn."""
    import torch

    from archsearch.training import precision

    monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
    with caplog.at_level("WARNING", logger="archsearch"):
        p = _choose({"amp": "bf16", "channels_last": "true"}, {}, [])
    assert p.amp == torch.bfloat16 and p.channels_last is True and p.source == "set"
    assert ("trainer.amp=bf16 on a CPU without bf16 instructions" in caplog.text) is warned
    caplog.clear()
    with caplog.at_level("WARNING", logger="archsearch"):
        _choose({"amp": "off", "channels_last": "true"}, {}, [])
    assert "bf16" not in caplog.text


@pytest.mark.parametrize("flags, bf16", [({"sse2", "avx2", "fma"}, False), ({"sse2", "avx512f"}, False),
                                         ({"sse2", "avx512_bf16"}, True), ({"amx_bf16"}, True), (None, True)])
def test_auto_times_bf16_only_where_the_cpu_has_bf16_instructions(flags, bf16, monkeypatch):
    """On an AVX2 EPYC a bf16 step cost 13-19 s against 1 s in fp32, and the probe spent most of its
    time on them: an x86 CPU without avx512_bf16 / amx_bf16 times fp32 only; a CPU without an x86
    flags line (ARM) times bf16 too; a bf16 set by hand is kept either way."""
    import torch

    from archsearch.training import precision

    monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
    cpu = torch.device("cpu")
    timed = {a for a, _ in precision.candidates(cpu, "auto", None, depthwise=3)}
    assert timed == ({"fp32", "bf16", "bf16-dw-fp32"} if bf16 else {"fp32"})
    assert precision.candidates(cpu, "bf16", True) == [("bf16", True)]
    calls: list = []
    p = _choose({"amp": "auto", "channels_last": "auto"}, {"fp32 NCHW": 1.0, "fp32 channels_last": 2.0,
                                                           "bf16 NCHW": 9.0, "bf16 channels_last": 9.0}, calls,
                spec_key=f"flags {sorted(flags or [])}")
    assert [a for a, _ in calls[0]].count("bf16") == (2 if bf16 else 0)
    assert p.amp_short == ("bf16" if bf16 else "fp32")


def test_the_choice_is_cached_per_spec_and_set_values_skip_the_probe(tmp_path, monkeypatch, bf16_cpu):
    import torch

    monkeypatch.setenv("ARCHSEARCH_CACHE_DIR", str(tmp_path))
    calls = []
    rates = {"fp32 NCHW": 100.0, "fp32 channels_last": 90.0, "bf16 NCHW": 300.0, "bf16 channels_last": 200.0}
    first = _choose({"amp": "auto", "channels_last": "auto"}, rates, calls)
    again = _choose({"amp": "auto", "channels_last": "auto"}, rates, calls)
    assert len(calls) == 1 and first.source == "probe" and again.source == "cache"
    assert again.amp == torch.bfloat16 and again.channels_last is False
    entry = json.loads((tmp_path / "precision.json").read_text())
    choices = [k for k in entry if "|kernels " not in k]  # beside it: each candidate's kernel check (test_kernel_check)
    assert len(choices) == 1 and "torch " + torch.__version__ in choices[0] and len(entry) == 2  # bf16 NCHW checked
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


def test_a_probe_timed_on_a_busy_machine_is_used_but_not_cached(tmp_path, monkeypatch, bf16_cpu):
    """Rates timed while other processes took the run's cores measure the contention: the run uses
    them and says so, the next run probes again; $ARCHSEARCH_PROBE_BUSY=1 caches whatever the load."""
    import torch

    monkeypatch.setenv("ARCHSEARCH_CACHE_DIR", str(tmp_path))
    calls = []
    rates = {"fp32 NCHW": 100.0, "fp32 channels_last": 90.0, "bf16 NCHW": 300.0, "bf16 channels_last": 200.0}

    def busy_probe(model, device, cands, *a, load=None, **k):
        calls.append(cands)
        load["others"] = 0.9
        return rates

    def choose():
        return choose_precision(OmegaConf.create({"amp": "auto", "channels_last": "auto"}), torch.device("cpu"),
                                _tiny_model(), "k", 16, (3, 32, 32), 10, probe_fn=busy_probe)

    first, again = choose(), choose()
    assert len(calls) == 2 and first.source == again.source == "probe" and first.amp == torch.bfloat16
    assert "busy while it timed (other processes took 90% of this run's cores): not cached" in first.describe()
    cached = json.loads((tmp_path / "precision.json").read_text())  # only the kernel checks' verdicts: load-free
    assert all("|kernels " in k for k in cached)

    def busy_compile(model, precision, *a, load=None, **k):
        calls.append(precision.label)
        load["others"] = 0.9
        return "compiled-module", {"eager": 100.0, "compiled": 150.0}, 20.0

    p = Precision(torch.device("cpu"), None, True, "probe", {"fp32 channels_last": 100.0})
    for _ in range(2):
        choice, fn = choose_compile("auto", _tiny_model(), p, "k", 16, (3, 32, 32), 10, 900_000,
                                    probe_fn=busy_compile, check=False)
        assert choice.compiled and choice.source == "probe" and "not cached" in choice.describe()
    assert len(calls) == 4 and json.loads((tmp_path / "precision.json").read_text()) == cached

    monkeypatch.setenv("ARCHSEARCH_PROBE_BUSY", "1")
    choose()
    assert len(calls) == 5 and choose().source == "cache"
    monkeypatch.setenv("ARCHSEARCH_PROBE_BUSY", "lots")
    with pytest.raises(ConfigError, match="ARCHSEARCH_PROBE_BUSY: must be a number from 0 to 1, got 'lots'"):
        choose_precision(OmegaConf.create({"amp": "auto", "channels_last": "auto"}), torch.device("cpu"),
                         _tiny_model(), "other", 16, (3, 32, 32), 10, probe_fn=busy_probe)
    with pytest.raises(ConfigError, match="ARCHSEARCH_PROBE_BUSY"):
        choose_compile("auto", _tiny_model(), p, "other", 16, (3, 32, 32), 10, 900_000, probe_fn=busy_compile,
                       check=False)
    assert len(calls) == 5  # refused before either probe ran: a bad value costs no probe


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="reads /proc/stat (Linux)")
def test_other_load_sees_processes_that_take_the_cores():
    n = os.cpu_count() or 1
    spin = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.5)  # the spinners are up
        watch = OtherLoad(threads=n)
        time.sleep(1.0)
        share = watch.share()
    finally:
        for p in spin:
            p.kill()
            p.wait()
    assert share is not None and share > 0.5  # n spinners on n cores: close to all of them


@pytest.mark.parametrize("key,value,message", [
    ("channels_last", "sometimes", "trainer.channels_last: must be one of auto, true, false"),
    ("amp", "fp8", "trainer.amp: unknown mode 'fp8'; choose one of auto, bf16, fp16, bf16-dw-fp32, off"),
])
def test_bad_precision_settings_are_one_line(key, value, message):
    with pytest.raises(ConfigError, match=message):
        _choose({"amp": "auto", "channels_last": "auto", key: value}, {}, [])


# ------------------------------------------------------------------ trainer.compile
def _compile(setting, images, rates=None, calls=None, eager_rate=100.0, spec_key="k", compile_s=50.0):
    import torch

    def fake_probe(model, precision, *a, **k):
        calls.append(precision.label)
        return "compiled-module", rates, compile_s

    p = Precision(torch.device("cpu"), None, True, "probe", {"fp32 channels_last": eager_rate})
    model = _tiny_model()
    choice, fn = choose_compile(setting, model, p, spec_key, 16, (3, 32, 32), 10, images, probe_fn=fake_probe, check=False)
    return choice, ("model" if fn is model else fn)


def test_compile_auto_leaves_short_runs_eager_without_a_probe(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHSEARCH_CACHE_DIR", str(tmp_path))
    calls = []
    # a sweep trial on a proxy: too few images; many images at a high rate: under 10 minutes eager
    for images, rate in ((50_000, 10.0), (1_000_000, 5_000.0)):
        choice, fn = _compile("auto", images, {"eager": 1.0, "compiled": 9.0}, calls, eager_rate=rate)
        assert not choice.compiled and fn == "model" and choice.source == "short run"
    assert not calls and not (tmp_path / "precision.json").exists()
    assert choice.tags() == {"compile": "false", "compile.why": "eager (short run: 1,000,000 images, ~3 min eager)"}


def test_compile_auto_probes_long_runs_keeps_the_faster_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHSEARCH_CACHE_DIR", str(tmp_path))
    calls = []
    choice, fn = _compile("auto", 900_000, {"eager": 100.0, "compiled": 125.0}, calls)
    assert choice.compiled and choice.source == "probe" and fn == "compiled-module"  # the probe's compile is reused
    assert "compiled 125 vs eager 100 (1.25x), 50 s to compile, 900,000 images" in choice.describe()
    assert calls == ["fp32 channels_last"]
    # the same architecture again: decided from the cache, compiled anew (a real torch.compile wrapper)
    choice, fn = _compile("auto", 900_000, {}, calls)
    assert choice.compiled and choice.source == "cache" and type(fn).__name__ == "OptimizedModule" and len(calls) == 1
    # 6% faster: kept once the probe has paid the compile; from the cache, a run that would not win
    # back its 80 s of compiling (100,000 images save 57 s) stays eager, still without a probe
    choice, fn = _compile("auto", 100_000, {"eager": 100.0, "compiled": 106.0}, calls, spec_key="slim", compile_s=80)
    assert choice.compiled and choice.source == "probe" and len(calls) == 2
    choice, fn = _compile("auto", 100_000, {}, calls, spec_key="slim")
    assert not choice.compiled and fn == "model" and choice.source == "cache" and len(calls) == 2
    # where compiling is slower (or within 5%), auto stays eager
    for i, compiled_rate in enumerate((78.0, 104.0)):
        choice, fn = _compile("auto", 900_000, {"eager": 100.0, "compiled": compiled_rate}, calls, spec_key=f"s{i}")
        assert not choice.compiled and fn == "model" and choice.source == "probe"


def test_compile_auto_trains_eager_and_says_why_when_compiling_fails(tmp_path, monkeypatch, caplog):
    import torch

    monkeypatch.setenv("ARCHSEARCH_CACHE_DIR", str(tmp_path))
    calls = []

    def broken(*a, **k):  # as on a machine without a C++ compiler
        calls.append(1)
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore detail")

    p = Precision(torch.device("cpu"), None, True, "probe", {"fp32 channels_last": 100.0})
    model = _tiny_model()
    for source in ("probe", "cache"):
        choice, fn = choose_compile("auto", model, p, "k", 16, (3, 32, 32), 10, 900_000, probe_fn=broken, check=False)
        assert not choice.compiled and fn is model and choice.source == source
        assert "RuntimeError: InvalidCxxCompiler: No working C++ compiler found" in choice.describe()
        assert "more detail" not in choice.describe()
    assert len(calls) == 1 and "compiling failed" in caplog.text  # tried once per machine and spec


def test_compile_set_values_skip_the_probe_and_bad_ones_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHSEARCH_CACHE_DIR", str(tmp_path))
    calls = []
    choice, fn = _compile(True, 10, {}, calls)
    assert choice.compiled and type(fn).__name__ == "OptimizedModule"
    choice, fn = _compile("false", 10**9, {}, calls)
    assert not choice.compiled and fn == "model" and not calls and choice.describe() == "eager (set)"
    with pytest.raises(ConfigError, match=r"^trainer.compile: must be one of auto, true, false; got 'sometimes'$"):
        _compile("sometimes", 10, {}, calls)
    # without a C++ compiler, true is refused in one line before anything runs (auto trains eager)
    monkeypatch.setenv("CXX", "no-such-c++")
    with pytest.raises(ConfigError, match=r"^trainer.compile=true: torch.compile needs a C\+\+ compiler and "
                                          r"'no-such-c\+\+' is not on PATH"):
        _compile("true", 10, {}, calls)
    assert _compile("auto", 10, {}, calls)[0].source == "short run"


@pytest.mark.slow
def test_the_compile_probe_leaves_the_model_as_it_was_and_training_compiles_once(tmp_path, monkeypatch):
    """The real probe (tens of seconds of C++ compiling): the model's weights, buffers and RNG
    are untouched; a compiled run with a partial last batch compiles one graph, not two."""
    import torch
    import torch._dynamo.utils as dynamo_utils

    monkeypatch.setenv("ARCHSEARCH_CACHE_DIR", str(tmp_path))
    model = _tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    compiled, rates, secs = probe_compile(model, Precision(torch.device("cpu"), None, False), 16, (3, 32, 32), 10,
                                          steps=2)
    assert set(rates) == {"eager", "compiled"} and all(v > 0 for v in rates.values()) and secs > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state()) and all(p.grad is None for p in model.parameters())

    torch._dynamo.reset()
    dynamo_utils.counters.clear()
    cfg = compose("config", ["data=synthetic", "data.n_train=200", "data.n_test=64", "data.val_size=64",
                             "model.wide=8", "model.narrow=8", "trainer.batch_size=32", "trainer.epochs=2",
                             "trainer.compile=true", "trainer.amp=off", "trainer.channels_last=false",
                             "trainer.progress=false", "tracking=none", "trainer.tta=none",
                             "trainer.kernel_check=false"])  # the check compiles a graph of its own
    res = train(cfg, tmp_path / "out")  # 136 training images: 4 batches of 32 and one of 8 per epoch
    assert res.epochs == 2 and res.test_acc == res.test_acc
    assert dynamo_utils.counters["stats"]["unique_graphs"] == 1


def test_compile_auto_on_a_gpu_probes_runs_longer_than_a_minute_eager(tmp_path, monkeypatch):
    """A small network on a GPU trains 900,000 images in seconds eager: a run of a few minutes there
    is long enough for the probe (on a CPU the bar is ten minutes)."""
    import torch

    monkeypatch.setenv("ARCHSEARCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Fake GPU")
    calls = []

    def fake_probe(model, precision, *a, **k):
        calls.append(precision.label)
        return "compiled-module", {"eager": 50_000.0, "compiled": 150_000.0}, 40.0

    p = Precision(torch.device("cuda"), torch.bfloat16, True, "probe", {"bf16 channels_last": 50_000.0})
    short, _ = choose_compile("auto", _tiny_model(), p, "k", 128, (3, 32, 32), 10, 900_000, probe_fn=fake_probe, check=False)
    assert not short.compiled and short.source == "short run" and not calls  # 18 s eager
    long, fn = choose_compile("auto", _tiny_model(), p, "k", 128, (3, 32, 32), 10, 9_000_000, probe_fn=fake_probe, check=False)
    assert long.compiled and long.source == "probe" and fn == "compiled-module" and calls  # 180 s eager, 3x faster
