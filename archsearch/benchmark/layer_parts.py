"""Part ``layers``: where a training step's time goes, layer by layer.

MACs are what the architecture searches score, and they are not time: on a 2-core CPU a depthwise
7x7 conv took 1.3-4x the time of a full 3x3 conv of the same width at a sixth of its MACs
(docs/search-results.md). This part times each distinct convolution and linear layer of a
network alone, forward and backward at the batch size, in fp32 NCHW and in the precision and
layout a run would choose, and sets its share of the layers' time beside its share of the MACs.
"""

from __future__ import annotations

import statistics
import time

from archsearch.benchmark.figures import spread
from archsearch.benchmark.inputs import auto_model, bench_device, model_name
from archsearch.training.kernel_check import (
    autocast_dtype,
    candidate_label,
    describe_layer,
    layer_census,
    set_up_for,
)

__all__ = ["part_layers"]

SHOWN = 8  # rows written: the layers that take the most time in the chosen precision


def _macs(m, out) -> int:
    """Multiply-accumulates of one image through layer ``m`` whose output (batch first) is ``out``."""
    import torch.nn as nn

    per_out = (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1] if isinstance(m, nn.Conv2d) \
        else m.in_features
    return out[0].numel() * per_out


def _time_layer(m, shape, batch: int, device, amp: str, cl: bool, reps: int) -> tuple[list[float], int]:
    """Milliseconds of ``reps`` forward+backward passes of ``m`` alone on a random batch (after one
    warm-up), and its MACs per image."""
    import copy

    import torch

    fmt = torch.channels_last if cl and len(shape) == 3 else torch.contiguous_format
    layer = set_up_for(copy.deepcopy(m), amp).to(device).to(memory_format=fmt).train()
    x = torch.randn(batch, *shape, device=device).contiguous(memory_format=fmt).requires_grad_()
    dtype = autocast_dtype(amp)

    def step():
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            y = layer(x)
        y.float().sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return y

    macs = _macs(m, step())
    ms = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        ms.append((time.perf_counter() - t0) * 1000)
    return ms, macs


def part_layers(opts: dict, rows: list, notes: list) -> None:
    """Each distinct layer alone (fp32 NCHW against auto's choice), the slowest first: ms, and its
    layers' share of the time against their share of the MACs."""
    device = bench_device(opts)
    reps, batch = int(opts.get("reps", 3)), int(opts.get("batch", 128))
    spec, chosen, model = auto_model(device, batch, model_name(opts))
    label = candidate_label(chosen.amp_short, chosen.channels_last)
    timed = []
    for name, m, shape, count in layer_census(model, spec.input_shape):
        base, macs = _time_layer(m, shape, batch, device, "fp32", False, reps)
        ours, _ = _time_layer(m, shape, batch, device, chosen.amp_short, chosen.channels_last, reps)
        timed.append((name, describe_layer(m, shape), count, base, ours, macs))
    total_ms = sum(statistics.median(ours) * n for _, _, n, _, ours, _ in timed)
    total_macs = sum(macs * n for _, _, n, _, _, macs in timed)
    timed.sort(key=lambda t: -statistics.median(t[4]) * t[2])
    for name, what, count, base, ours, macs in timed[:SHOWN]:
        times = f" (x{count} in the network)" if count > 1 else ""
        share_t = 100 * statistics.median(ours) * count / total_ms
        share_m = 100 * macs * count / total_macs
        rows.append((f"2g. layer {name}: {what}{times}, forward+backward at batch {batch} (ms)",
                     f"fp32 NCHW: {spread(base, digits=1)}",
                     f"{label}: {spread(ours, digits=1)}; {share_t:.0f}% of the layers' time, {share_m:.0f}% of the MACs",
                     f"{statistics.median(base) / statistics.median(ours):.2f}x"))
    notes.append(f"part 2g: {len(timed)} distinct conv/linear layers of {model_name(opts)}, each alone ({SHOWN} "
                 f"that take the most time shown); in {label} (auto's choice) they sum to {total_ms:,.0f} ms a batch "
                 "with repeats counted; BatchNorm, activations, the optimizer and the data pipeline are not in it.")
