"""The CUDA-specific paths, exercised on a CPU where their mechanism allows: where a checkpoint's
RNG states are loaded, which GPUs a sweep's trials are given, what ``trainer.device=cuda:N``
checks and sets, and how the precision probe judges fp16's scaler and a candidate that raises."""

import types

import pytest
import torch

from archsearch.errors import ConfigError
from archsearch.search.pool import gpu_entries, plan_slots, visible_gpus
from archsearch.training import checkpoint
from archsearch.training.engine import TrainState
from archsearch.training.precision import Stepper, candidates, pick_device, probe
from archsearch.training.probe_cache import busy_note


class FakeEngine:
    """What checkpoint.save/restore need of an Engine: its states, its device, whether it has an EMA."""

    def __init__(self, device):
        self.precision = types.SimpleNamespace(device=device)
        self.ema, self.loaded = None, None

    def state_dict(self):
        return {"model": {"w": torch.ones(2)}, "optimizer": {}, "scheduler": None, "scaler": {}, "ema": None}

    def load_state_dict(self, state):
        self.loaded = state


def saved(tmp_path, device):
    spec = types.SimpleNamespace(to_dict=lambda: {"layers": []})
    path = tmp_path / "last.pt"
    checkpoint.save(path, FakeEngine(device), TrainState(epoch=3, best_val=0.5, history=[], run_id="r"), spec, "h",
                    {"seed": "0"})
    return path


def test_resume_onto_a_device_keeps_the_rng_states_on_the_cpu_and_continues_the_random_stream(tmp_path):
    # ``meta`` stands in for a GPU: a checkpoint mapped onto it holds a CPU RNG state set_rng_state refuses
    torch.manual_seed(7)
    path = saved(tmp_path, torch.device("cpu"))
    expected = torch.rand(3)
    eng = FakeEngine(torch.device("meta"))
    state = checkpoint.restore(checkpoint.read(str(path), "h"), eng)
    assert torch.equal(torch.rand(3), expected)  # the same draws as the run it continues
    assert state.epoch == 3 and eng.loaded["model"]["w"].device.type == "cpu"  # the engine moves them


def test_the_gpus_random_states_are_saved_and_restored(tmp_path, monkeypatch):
    gpu_state = [torch.arange(16, dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: gpu_state)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    path = saved(tmp_path, torch.device("cpu"))
    assert torch.equal(torch.load(path, weights_only=False)["rng"]["cuda"][0], gpu_state[0])
    checkpoint.restore(checkpoint.read(str(path), "h"), FakeEngine(torch.device("cpu")))
    assert len(restored) == 1 and torch.equal(restored[0][0], gpu_state[0])


@pytest.mark.parametrize("visible, entries", [("2,3", [2, 3]), ("GPU-1a2b,MIG-3c4d", ["GPU-1a2b", "MIG-3c4d"]),
                                              (None, [0, 1])])
def test_trials_get_the_sweepers_own_gpus_not_the_first_n(visible, entries, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert visible_gpus() == entries
    slots = plan_slots(None, "auto", 1, cores=[0, 1, 2, 3])  # a SLURM allocation's 2 GPUs, say
    assert [s.env()["CUDA_VISIBLE_DEVICES"] for s in slots] == [str(e) for e in entries]
    assert [s.env()["CUDA_VISIBLE_DEVICES"] for s in plan_slots(None, [1], 1, cores=[0, 1])] == [str(entries[1])]
    with pytest.raises(ValueError, match=r"hydra.sweeper.devices: \[2\] names GPUs this process cannot see; it sees 2"):
        plan_slots(None, [2], 1, cores=[0, 1])


def test_gpu_entries_follow_cuda_visible_devices():
    assert gpu_entries("", 0) == [] and gpu_entries("1, 0", 2) == [1, 0] and gpu_entries("5,6,7", 2) == [5, 6]


def test_devices_cpu_hides_the_gpus_from_its_trials():
    slots = plan_slots(2, "cpu", 1, cores=[0, 1], gpus=[0, 1])
    assert [s.env()["CUDA_VISIBLE_DEVICES"] for s in slots] == ["", ""]  # trainer.device=auto: the CPU


def test_a_probe_on_a_shared_gpu_is_not_cached(monkeypatch):
    slots = plan_slots(None, "auto", 2, cores=list(range(4)), gpus=[0])
    assert [s.env()["ARCHSEARCH_GPU_SHARED_BY"] for s in slots] == ["2", "2"]
    monkeypatch.setenv("ARCHSEARCH_GPU_SHARED_BY", "2")
    assert "shared by 2 trials" in busy_note(0.0, 0.25, torch.device("cuda"))
    assert busy_note(0.0, 0.25, torch.device("cpu")) == ""  # the CPU's load is measured, not assumed
    monkeypatch.setenv("ARCHSEARCH_GPU_SHARED_BY", "1")
    assert busy_note(0.0, 0.25, torch.device("cuda")) == ""


def test_cuda_n_is_checked_and_made_the_current_device(monkeypatch):
    current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    assert pick_device("cuda:1") == torch.device("cuda:1") and current == [torch.device("cuda:1")]
    with pytest.raises(ConfigError, match=r"trainer.device: 'cuda:2' but this process sees 2 GPUs \(cuda:0-cuda:1"):
        pick_device("cuda:2")


def test_emulated_bf16_is_not_a_candidate_on_a_gpu(monkeypatch):
    asked = []

    def bf16(including_emulation=True):
        asked.append(including_emulation)
        return including_emulation  # a T4: bf16 only emulated

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", bf16)
    amps = {a for a, _ in candidates(torch.device("cuda"), "auto", None)}
    assert amps == {"fp32", "fp16"} and asked == [False]


def tiny_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(288, 10))


def test_a_candidate_that_raises_loses_instead_of_ending_the_run(monkeypatch):
    step = Stepper.step

    def cudnn_without_bf16(self):
        if self.dtype == torch.bfloat16:
            raise RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED")
        return step(self)

    monkeypatch.setattr(Stepper, "step", cudnn_without_bf16)
    rates = probe(tiny_model(), torch.device("cpu"), [("fp32", False), ("bf16", False)], 16, (3, 8, 8), 10)
    assert rates["bf16 NCHW"] == 0.0 and rates["fp32 NCHW"] > 0


@pytest.mark.parametrize("init_scale, finite", [(2.0**20, True), (2.0**28, False)])
def test_fp16_overflows_the_scaler_skips_are_not_a_verdict(init_scale, finite):
    s = Stepper(tiny_model(), torch.device("cpu"), "fp16", False, torch.randn(16, 3, 8, 8), 10)
    s.scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    for _ in range(4):  # the probe's warm-up and 3 timed steps
        s.step()
    assert s.skipped >= 1  # it overflowed: the scaler skipped steps and lowered its scale
    assert s.finite is finite  # steps taken after the scale came down: fine; never a step taken: not


def test_system_metrics_sample_only_the_runs_own_gpu(monkeypatch, caplog):
    """NVML lists every GPU of the machine whatever CUDA_VISIBLE_DEVICES says: a trial on the
    third GPU logs that one, as its gpu_0, and a CPU run logs none."""
    import pynvml

    from archsearch.tracking.tracker import keep_own_gpus

    uuids = {f"h{i}": f"GPU-{c}{c}{c}-uuid" for i, c in enumerate("abcd")}
    monkeypatch.setattr(pynvml, "nvmlDeviceGetUUID", lambda h: uuids[h])
    mon = types.SimpleNamespace(gpu_handles=list(uuids), num_gpus=4)
    assert keep_own_gpus(mon, ["ccc-uuid"])  # torch's UUID has no "GPU-" prefix
    assert mon.gpu_handles == ["h2"] and mon.num_gpus == 1
    mon = types.SimpleNamespace(gpu_handles=list(uuids), num_gpus=4)
    assert not keep_own_gpus(mon, None)  # a CPU run: the GPU monitor goes
    mon = types.SimpleNamespace(gpu_handles=list(uuids), num_gpus=4)
    assert not keep_own_gpus(mon, ["MIG-eee"]) and "no GPU metrics" in caplog.text


def test_fused_optimisers_only_for_parameters_on_a_gpu():
    from archsearch.config.compose import compose
    from archsearch.training.optim import _fused, make_optimizer

    model = torch.nn.Linear(4, 2)
    assert _fused(model) == {} and not make_optimizer(compose("config", []).optim, model).defaults.get("fused")
    assert _fused(types.SimpleNamespace(parameters=lambda: [types.SimpleNamespace(device=torch.device("cuda", 0))])) \
        == {"fused": True}
