"""The parts that measure training: archsearch's real training path end to end against the
reference loop (rows 1, 1b and 1c, the reference's own time to 85%), the model step alone per precision/layout and the augmentation
rate (2a, 2b), what torch.compile costs and gains (2c), what the precision probe costs (2e) and what the kernel
check adds to it (2f)."""

from __future__ import annotations

import math
import statistics
import tempfile
import time

from archsearch import build_model, load_spec
from archsearch.benchmark.figures import spread
from archsearch.benchmark.inputs import auto_model, bench_device, bench_images, model_name
from archsearch.benchmark.reference import ReferenceLoop, era_s9_pipeline
from archsearch.config.compose import compose
from archsearch.grammar.spec import spec_hash
from archsearch.training.batches import worker_count
from archsearch.training.compilation import choose_compile, probe_compile
from archsearch.training.data import Splits, channel_stats
from archsearch.training.depthwise_fp32 import depthwise_convs
from archsearch.training.job import train
from archsearch.training.kernel_check import candidate_label, check_kernels, distinct_layers
from archsearch.training.precision import DROP, candidates, cpu_bf16, probe

__all__ = ["part_breakdown", "part_compile", "part_kernels", "part_probe", "part_train"]

# The reference's own time to 85%: the seed's log (ERA-V1 S9) first shows 85% test accuracy (85.03%)
# after epoch 43 of its 50,000-image training set; row 1c projects that many images at row 1's rates
REFERENCE_EPOCHS_TO_85, REFERENCE_EPOCH_IMAGES = 43, 50_000

# torch is imported where it is used: `python -m archsearch.bench --help` and a mistyped option
# answer without it


def part_train(opts: dict, rows: list, notes: list) -> None:
    """archsearch's real training path (archsearch.training.job.train) vs the reference loop."""
    x, y = bench_images(opts)
    reps, batch = int(opts.get("reps", 3)), int(opts.get("batch", 128))
    device = bench_device(opts)
    workers = worker_count(opts.get("workers", "auto"), device)
    mean, std = channel_stats(x)
    splits = Splits(x, y, x[:256], y[:256], x[:256], y[:256], tuple(f"c{i}" for i in range(10)), mean, std)
    # ours: the real loop; the reference runs one epoch after each of ours (from the epoch hook, outside
    # our timed loop), so each pair compared is measured back to back and drift hits both alike; the
    # first epoch of each is the warm-up
    cfg = compose("config", [f"model={model_name(opts)}", "tracking=none", f"trainer.device={device}", f"trainer.epochs={reps + 1}",
                             f"trainer.batch_size={batch}", "trainer.progress=false", "trainer.checkpoint=false",
                             f"trainer.workers={opts.get('workers', 'auto')}",
                             # every measured epoch does the full era_s9 work, as the reference does
                             "aug.cooldown_fraction=0", "trainer.tta=none"])
    model = build_model(load_spec(model_name(opts))).to(device)
    run_images = int(opts.get("run_images", 900_000))
    compiled, why, compile_s = _compile_for_run(str(opts.get("compile", "auto")), device, batch, model_name(opts),
                                                run_images)
    cfg.trainer.compile = compiled  # the warm-up epoch compiles (if at all): not in the measured epochs
    ref: list[float] = []
    ref_loop = ReferenceLoop(model, x, y, batch, workers, device)

    def reference(epoch: int, val_acc: float) -> None:
        ref.append(ref_loop.epoch())

    with tempfile.TemporaryDirectory() as td:
        res = train(cfg, td, epoch_hook=reference, data=splits)
    ours, ref = [h["images_per_s"] for h in res.history[1:]], ref[1:]
    ratio = [o / r for o, r in zip(ours, ref)]
    rows.append(("1. training, end to end (images/s)", f"reference loop: {spread(ref)}", f"archsearch: {spread(ours)}",
                 f"**{statistics.median(ratio):.2f}x** ({min(ratio):.2f}-{max(ratio):.2f})"))
    # the run at the paired ratio of row 1 (robust to the machine's drift), plus the compile it pays once
    ref_min = run_images / statistics.median(ref) / 60
    ours_min = ref_min / statistics.median(ratio) + compile_s / 60
    rows.append((f"1b. a run of {run_images:,} images, projected from row 1 (minutes)", f"reference loop: {ref_min:,.1f}",
                 f"archsearch: {ours_min:,.1f}" + (f" ({compile_s:.0f} s of it compiling)" if compile_s else ""),
                 f"{ref_min / ours_min:.2f}x"))
    to85 = REFERENCE_EPOCHS_TO_85 * REFERENCE_EPOCH_IMAGES
    ref85, ours85 = to85 / statistics.median(ref) / 60, to85 / statistics.median(ref) / statistics.median(ratio) / 60
    rows.append((f"1c. the reference's own 85%: its {REFERENCE_EPOCHS_TO_85} epochs of {REFERENCE_EPOCH_IMAGES:,} images, "
                 "projected from row 1 (minutes)", f"reference loop: {ref85:,.1f}", f"archsearch loop: {ours85:,.1f}",
                 f"{ref85 / ours85:.2f}x"))
    notes.append(f"part 1: {len(x):,} images/epoch, batch {batch}, {workers} DataLoader worker(s) for both, "
                 f"{reps} measured epochs after 1 warm-up, alternating (one of ours, one of the reference); "
                 "archsearch with its defaults (trainer.amp=auto, "
                 f"trainer.channels_last=auto chose {res.precision}; trainer.compile={compiled}: {why}), "
                 "uint8 batches normalised on the device; reference: the same era_s9 transforms then "
                 "Normalize+ToTensorV2 per sample, fp32, NCHW, "
                 "log_softmax+NLL, .item() every step.")


def _compile_for_run(setting: str, device, batch: int, name: str, images: int) -> tuple[str, str, float]:
    """Part 1's ``trainer.compile``: auto -> what ``auto`` picks for a run of ``images`` images
    (its probe, or its cache) -> (true/false, why, the compile seconds a run pays)."""
    if setting != "auto":
        return setting, "set", 0.0
    spec, precision, model = auto_model(device, batch, name)
    choice, _ = choose_compile("auto", model, precision, spec_hash(spec), batch, spec.input_shape, spec.num_classes,
                               images)
    why = f"auto for a run of {images:,} images chose {choice.describe()}"
    return str(choice.compiled).lower(), why, (choice.compile_s or 0.0) if choice.compiled else 0.0


def part_breakdown(opts: dict, rows: list, notes: list) -> None:
    """Model step alone (tensors already on the device) for every precision/layout candidate
    the probe times; augmentation rate."""
    device = bench_device(opts)
    reps, batch = int(opts.get("reps", 3)), int(opts.get("batch", 128))
    steps = 8 if device.type == "cpu" else 50
    spec = load_spec(model_name(opts))
    cands = candidates(device, "auto", None, depthwise_convs(build_model(spec)))
    runs = [probe(build_model(spec), device, cands, batch, spec.input_shape, spec.num_classes, steps=steps, drop=None)
            for _ in range(reps)]
    base = [r["fp32 NCHW"] for r in runs]
    chosen = auto_model(device, batch, model_name(opts))[1]
    for label in runs[0]:
        if label == "fp32 NCHW":
            continue
        rates = [r[label] for r in runs]
        mark = " (auto's choice)" if chosen.label == label else ""
        rows.append((f"2a. model step alone, {label}{mark} (images/s)", f"fp32 NCHW: {spread(base)}", spread(rates),
                     f"{statistics.median(rates) / statistics.median(base):.2f}x"))
    # the step alone at larger batches, at auto's choice: a small network's GPU step is launch-bound
    sizes = [batch * 2 ** i for i in range(4 if device.type == "cuda" else 2)]
    label = chosen.label
    at = {b: [probe(build_model(spec), device, [(chosen.amp_short, chosen.channels_last)], b, spec.input_shape,
                    spec.num_classes, steps=steps)[label] for _ in range(reps)] for b in sizes}
    for b in sizes[1:]:
        rows.append((f"2d. model step alone, {label}, batch {b} (images/s)", f"batch {batch}: {spread(at[batch])}",
                     spread(at[b]), f"{statistics.median(at[b]) / statistics.median(at[batch]):.2f}x"))
    x, _ = bench_images({**opts, "images": min(int(opts.get("images", 4096)), 4096)})
    pipe = era_s9_pipeline([125.0, 123.0, 114.0])
    rates = []
    for r in range(reps + 1):
        pipe.set_random_seed(r)
        t0 = time.perf_counter()
        for im in x:
            pipe(image=im)
        if r:
            rates.append(len(x) / (time.perf_counter() - t0))
    rows.append(("2b. era_s9 augmentation, one worker (images/s)", "", spread(rates), ""))
    notes.append("part 2: the full-pipeline figure is part 1's archsearch column; the difference to 2a "
                 "is the data pipeline's share (loading, augmentation, host-to-device copy).")


def part_probe(opts: dict, rows: list, notes: list) -> None:
    """What ``trainer.amp=auto``'s probe costs a run that meets a network it has not timed yet (each
    architecture of a search): every candidate timed to the end against the probe as it runs, which
    drops a candidate that cannot win; the two alternate, ``reps`` times each."""
    device = bench_device(opts)
    reps, batch = int(opts.get("reps", 3)), int(opts.get("batch", 128))
    spec = load_spec(model_name(opts))
    model = build_model(spec)
    cands = candidates(device, "auto", None, depthwise_convs(model))
    secs, fastest = _timed_probes(model, spec, device, batch, reps, {None: (cands, None), DROP: (cands, DROP)})
    rows.append((f"2e. the precision probe of trainer.amp=auto, {len(cands)} candidates, batch {batch} (s)",
                 f"every candidate timed to the end: {spread(secs[None], digits=1)}",
                 f"dropping what cannot win: {spread(secs[DROP], digits=1)}",
                 f"{statistics.median(secs[None]) / statistics.median(secs[DROP]):.2f}x"))
    notes.append(f"part 2e: the probe a run pays once per network (then cached): one warm-up and 3 timed steps per "
                 f"candidate, or fewer for one {DROP:g}x slower than the fastest after a round; fastest candidate "
                 f"timing all: {', '.join(sorted(fastest[None]))}; dropping: {', '.join(sorted(fastest[DROP]))}.")
    if device.type == "cpu" and not cpu_bf16():
        _probe_without_bf16(model, spec, device, batch, reps, cands, rows, notes)


def _timed_probes(model, spec, device, batch: int, reps: int, ways: dict) -> tuple[dict, dict]:
    """Each way of probing (key -> (candidates, drop)), alternated ``reps`` times -> (seconds per way,
    the fastest candidates each way found)."""
    secs: dict = {k: [] for k in ways}
    fastest: dict = {k: set() for k in ways}
    for _ in range(reps):
        for k, (cands, drop) in ways.items():
            t0 = time.perf_counter()
            rates = probe(model, device, cands, batch, spec.input_shape, spec.num_classes, drop=drop)
            secs[k].append(time.perf_counter() - t0)
            fastest[k].add(max(rates, key=rates.get))
    return secs, fastest


def _probe_without_bf16(model, spec, device, batch: int, reps: int, ours: list, rows: list, notes: list) -> None:
    """On an x86 CPU without bf16 instructions ``auto`` times fp32 only (``ours``, its candidates): its probe
    against one that also timed the (emulated) bf16 candidates, both dropping what cannot win, alternated."""
    every = candidates(device, "auto", None, depthwise_convs(model), bf16=True)
    secs, picked = _timed_probes(model, spec, device, batch, reps, {"every": (every, DROP), "ours": (ours, DROP)})
    rows.append((f"2e. the precision probe on this CPU without bf16 instructions, batch {batch} (s)",
                 f"bf16 timed too ({len(every)} candidates): {spread(secs['every'], digits=1)}",
                 f"fp32 only ({len(ours)} candidates, auto's): {spread(secs['ours'], digits=1)}",
                 f"{statistics.median(secs['every']) / statistics.median(secs['ours']):.2f}x"))
    notes.append(f"part 2e: without bf16 instructions (emulated bf16) auto times fp32 only; the fastest candidate "
                 f"with bf16 timed too: {', '.join(sorted(picked['every']))}; fp32 only: "
                 f"{', '.join(sorted(picked['ours']))}.")


def part_kernels(opts: dict, rows: list, notes: list) -> None:
    """What ``trainer.kernel_check`` adds to a run that meets a new network: each candidate's check
    (eager, and compiled in auto's choice unless ``compile=false``) against one probe of
    ``trainer.amp=auto``, and its verdict."""
    device = bench_device(opts)
    reps, batch = int(opts.get("reps", 3)), int(opts.get("batch", 128))
    spec, chosen, model = auto_model(device, batch, model_name(opts))
    cands = candidates(device, "auto", None, depthwise_convs(model))
    probe_s = []
    for _ in range(reps):
        t0 = time.perf_counter()
        probe(model, device, cands, batch, spec.input_shape, spec.num_classes)
        probe_s.append(time.perf_counter() - t0)
    n = len(distinct_layers(model, spec.input_shape))
    runs = [(a, cl, False) for a, cl in cands[1:]]
    runs += [(chosen.amp_short, chosen.channels_last, True)] if str(opts.get("compile", "auto")) != "false" else []
    for amp, cl, compiled in runs:
        secs, verdict = [], "right"
        for _ in range(1 if compiled else reps):  # a compiled check compiles: once is its cost
            t0 = time.perf_counter()
            fault = check_kernels(model, device, amp, cl, batch, spec.input_shape, compiled=compiled)
            secs.append(time.perf_counter() - t0)
            verdict = fault.describe() if fault else verdict
        label = candidate_label(amp, cl, compiled)
        rows.append((f"2f. kernel check, {label}, {n} distinct layers (s)", f"the probe: {spread(probe_s, digits=1)}",
                     f"{spread(secs, digits=1)}: {verdict}", f"{statistics.median(secs) / statistics.median(probe_s):.2f}x"))
    notes.append("part 2f: a run checks only the candidate it would use (the probe's fastest; the next if that is "
                 "wrong), and the compiled kernels only when compiling wins; verdicts are cached with the probe's.")


def part_compile(opts: dict, rows: list, notes: list) -> None:
    """torch.compile: what it costs up front and what it gains per step (the probe of
    ``trainer.compile=auto``, on a cold compile), so you know from how many images it pays off;
    on a GPU also with CUDA graphs (``mode="reduce-overhead"``)."""
    device = bench_device(opts)
    batch = int(opts.get("batch", 128))
    spec, chosen, model = auto_model(device, batch, model_name(opts))
    for mode in (None, "reduce-overhead") if device.type == "cuda" else (None,):
        _compile_row(rows, model, spec, chosen, batch, mode, steps=10 if device.type == "cpu" else 50)
    notes.append("part 2c: the compile probe of trainer.compile=auto (cold compile; then 10 steps each (50 on a GPU), "
                 "eager and compiled interleaved, medians); break-even = compile time / per-image time saved. auto "
                 "compiles a run when it is faster by 5% and the run's images save more than the compile costs.")


def _compile_row(rows: list, model, spec, chosen, batch: int, mode: str | None, steps: int) -> None:
    import torch
    import torch._inductor.config as inductor_config

    what = f"2c. torch.compile{f' mode={mode}' if mode else ''}, {chosen.label}"
    torch._dynamo.reset()
    cold = inductor_config.force_disable_caches
    inductor_config.force_disable_caches = True  # a cold compile, as on a machine that never compiled this model
    try:
        _, rates, compile_s = probe_compile(model, chosen, batch, spec.input_shape, spec.num_classes, steps=steps,
                                            mode=mode)
    except Exception as e:  # no C++ compiler, an op inductor cannot lower: the other rows still report
        first = (str(e).strip().splitlines() or [""])[0][:160]
        rows.append((what, "not measured", f"compiling failed: {type(e).__name__}", first))
        return
    finally:
        inductor_config.force_disable_caches = cold
    eager, compiled = rates["eager"], rates["compiled"]
    gain = 1 / eager - 1 / compiled if eager and compiled else 0.0  # seconds saved per image
    breakeven = compile_s / gain if gain > 0 else float("inf")
    rows.append((f"{what} (model step, images/s)", f"eager: {eager:,.0f}",
                 f"compiled: {compiled:,.0f} after {compile_s:.0f}s compiling",
                 f"{compiled / eager:.2f}x; pays off after "
                 + (f"{breakeven:,.0f} images" if math.isfinite(breakeven) else "never")))
