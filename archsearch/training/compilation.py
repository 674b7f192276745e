"""Whether a run trains its model through ``torch.compile``, and why.

``trainer.compile``: ``true`` / ``false``, or ``auto`` (the default): compiling costs tens of
seconds up front (cold, 23-48 s for ``dilated_sep`` on a 2-core CPU) and then makes each step
faster, or not, depending on the machine and the network (``dilated_sep``'s compiled step was
1.18-1.26x the eager one on a CPU with bf16 instructions and without; a residual network from
a search measured 1.03x; BENCHMARKS.md, docs/engine.md). So ``auto`` decides by measurement,
and only where it can pay:

1. a run is *short* when it trains fewer than :data:`MIN_IMAGES` images or its eager
   training would take under :data:`MIN_SECONDS` (per device type) at the rate the precision
   probe measured: it stays eager without a probe (sweep trials on a proxy, tests, smoke runs).
   On a GPU the bar is a minute, not ten: a small network's eager step there is bound by
   kernel launches, so compiling can win by a large factor, and a 20-epoch run takes well under
   ten minutes eager; the probe then decides whether the run's images pay for the compile;
2. otherwise the model is compiled and its training step timed against the eager one
   (10 steps each, interleaved so that the machine's drift hits both alike, on a fixed random
   batch; the weights, BatchNorm statistics and RNG are restored afterwards). Compiled wins
   if it is :data:`MARGIN` faster and the time it saves over the run covers the compile
   time; the probe's compiled model is then the one that trains, so the compile is paid once.

The probe's result is cached beside the precision probe's (same file, same key parts: machine,
torch version, device, threads, spec hash, batch size, plus the precision): a later run of the
same architecture decides from the cache, compiling again only if compiled wins.

A compiled run sends only full batches through the compiled model: the epoch's last, smaller
batch goes through the eager module (the same weights), so a new shape does not trigger a
second compilation.

``true`` is checked before any data is loaded: without a C++ compiler (inductor's, ``$CXX`` or
``g++``) it is a one-line error rather than a traceback at the first training step (``auto``
trains eager there and says so).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from archsearch.errors import ConfigError, first_line
from archsearch.training.kernel_check import checked
from archsearch.training.precision import Precision, Stepper
from archsearch.training.probe_cache import (
    OtherLoad,
    busy_limit,
    busy_note,
    cache_key,
    read_entry,
    write_entry,
)

__all__ = ["COMPILE_MODES", "CompileChoice", "choose_compile", "compile_setting", "probe_compile"]

COMPILE_MODES = ("auto", "true", "false")
log = logging.getLogger("archsearch")

# torch is imported in the functions that use it: archsearch.train imports the training modules at
# its top and refuses a mistyped knob before torch is loaded, and `from archsearch import fit` loads
# torch only when called

MARGIN = 1.05  # compiled must be 5% faster: it rounds differently and pays its compile in every run
MIN_IMAGES = 100_000  # fewer training images: auto does not consider compiling
# eager training shorter than this (estimated, per device type): auto does not consider compiling
MIN_SECONDS = {"cpu": 600.0, "cuda": 60.0}


def compile_setting(value) -> str:
    """``trainer.compile`` -> ``auto`` / ``true`` / ``false`` (YAML booleans allowed); ``true``
    needs the C++ compiler torch.compile builds its kernels with."""
    v = str(value).lower()
    if v not in COMPILE_MODES:
        raise ConfigError(f"trainer.compile: must be one of {', '.join(COMPILE_MODES)}; got {value!r}")
    if v == "true":
        cxx = os.environ.get("CXX") or ("clang++" if sys.platform == "darwin" else "g++")
        if shutil.which(cxx) is None:
            raise ConfigError(f"trainer.compile=true: torch.compile needs a C++ compiler and {cxx!r} is not on PATH "
                              "(install one, or set CXX); auto or false train without one")
    return v


@dataclass(frozen=True)
class CompileChoice:
    """Whether the run compiles (``source``: set, short run, probe or cache) and the figures behind it."""

    compiled: bool
    source: str = "set"
    why: str = ""
    rates: dict[str, float] = field(default_factory=dict)  # training-step img/s: eager, compiled
    compile_s: float | None = None

    def describe(self) -> str:
        what = "compiled" if self.compiled else "eager"
        return f"{what} ({self.source}{': ' + self.why if self.why else ''})"

    def tags(self) -> dict[str, str]:
        return {"compile": str(self.compiled).lower(), "compile.why": self.describe()}


def probe_compile(model, precision: Precision, batch_size: int, input_shape: tuple[int, int, int],
                  num_classes: int, steps: int = 10, load: dict | None = None,
                  mode: str | None = None) -> tuple[Any, dict[str, float], float]:
    """Compile ``model`` and time its training step against the eager one -> (compiled module,
    {"eager": img/s, "compiled": img/s}, compile seconds). ``model`` (already on its device, in its
    memory format) keeps its weights, buffers and the global RNG state; no gradients are left.
    ``load``, when given, receives ``others``: the share of the CPU other processes took while the
    steps were timed (the compile's own worker processes excluded: they run before). ``mode``:
    torch.compile's (None: its default; ``reduce-overhead``: CUDA graphs, what the GPU check times)."""
    import torch

    device = precision.device
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if device.type == "cpu":  # "No CUDA runtime is found" on every CPU compile: not the user's concern
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    compiled = torch.compile(model, mode=mode)
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            eager, comp, times, compile_s = _time_steps(model, compiled, precision, batch_size, input_shape,
                                                        num_classes, steps, load)
    finally:  # also when compiling failed half-way: the run goes on with the weights it had
        with torch.no_grad():
            model.load_state_dict(saved)
        model.zero_grad(set_to_none=True)
    rates = {k: 0.0 if not s.finite else batch_size / sorted(t)[len(t) // 2]
             for (k, t), s in zip(times.items(), (eager, comp))}
    return compiled, rates, compile_s


def _time_steps(model, compiled, precision: Precision, batch_size: int, input_shape: tuple[int, int, int],
                num_classes: int, steps: int, load: dict | None = None):
    import torch

    device = precision.device
    batch = torch.randn(batch_size, *input_shape, generator=torch.Generator().manual_seed(0))
    eager = Stepper(model, device, precision.amp_short, precision.channels_last, batch, num_classes)
    comp = Stepper(compiled, device, precision.amp_short, precision.channels_last, batch, num_classes,
                    own_copy=False)
    t0 = time.perf_counter()
    comp.step()  # compiles forward and backward
    comp.step()  # the optimiser's first step with momentum buffers: may compile once more
    compile_s = time.perf_counter() - t0
    comp.step()
    eager.step()
    eager.step()
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    watch = OtherLoad()
    for _ in range(steps):
        times["eager"].append(eager.step())
        times["compiled"].append(comp.step())
    if load is not None:
        load["others"] = watch.share()
    return eager, comp, times, compile_s


def _pays(images: int, rates: dict[str, float], compile_s: float) -> bool:
    e, c = rates.get("eager", 0.0), rates.get("compiled", 0.0)
    if c <= MARGIN * e or e <= 0:
        return False
    return images * (1 / e - 1 / c) > compile_s


def choose_compile(setting, model, precision: Precision, spec_key: str, batch_size: int,
                   input_shape: tuple[int, int, int], num_classes: int, images: int,
                   probe_fn: Callable[..., tuple[Any, dict[str, float], float]] = probe_compile,
                   check: bool = True) -> tuple[CompileChoice, Any]:
    """``trainer.compile`` for a run that trains ``images`` images -> (choice, the module its
    training steps call: ``model`` itself or its compiled wrapper). ``check`` (``trainer.kernel_check``):
    compiled kernels that compute a layer wrong here are refused when set, not used under auto."""
    import torch

    mode = compile_setting(setting)
    if mode == "false":
        return CompileChoice(False), model
    fault = (lambda: checked(model, precision.device, precision.amp_short, precision.channels_last, spec_key,
                             batch_size, input_shape, compiled=True)) if check else (lambda: None)
    if mode == "true":
        if f := fault():
            raise ConfigError(f"trainer.compile=true: {f.describe()} (a kernel fault of this torch build); set "
                              "trainer.compile=false or auto, or trainer.kernel_check=false to compile anyway")
        return CompileChoice(True), torch.compile(model)
    if precision.device.type not in ("cpu", "cuda"):
        return CompileChoice(False, "auto", f"not tried on {precision.device.type}"), model
    eager = precision.rates.get(precision.label)
    if images < MIN_IMAGES or (eager and images / eager < MIN_SECONDS[precision.device.type]):
        est = f", ~{images / eager / 60:.0f} min eager" if eager else ""
        return CompileChoice(False, "short run", f"{images:,} images{est}"), model
    key = cache_key(precision.device, spec_key, batch_size, f"compile {precision.label}")
    entry = read_entry(key)
    if entry and isinstance(entry.get("rates"), dict) and entry.get("compile_s") is not None:
        rates = {str(k): float(v) for k, v in entry["rates"].items()}
        secs = float(entry["compile_s"])
        pays = _pays(images, rates, secs)
        choice = CompileChoice(pays, "cache", _why(rates, secs, images), rates, secs)
        return _unless_faulty(choice, (lambda: torch.compile(model)) if pays else (lambda: model), model, fault)
    if entry and entry.get("error"):
        return CompileChoice(False, "cache", f"compiling failed here before: {entry['error']}"), model
    load: dict = {}
    limit = busy_limit()
    try:
        compiled, rates, secs = probe_fn(model, precision, batch_size, input_shape, num_classes, load=load)
    except Exception as e:  # no C++ compiler, an op inductor cannot lower, ...: the run trains eager, and says so
        msg = first_line(e)
        log.warning("trainer.compile=auto: compiling failed (%s); training eager", msg)
        write_entry(key, {"error": msg, "when": time.strftime("%Y-%m-%d %H:%M:%S")})
        return CompileChoice(False, "probe", f"compiling failed: {msg}"), model
    busy = busy_note(load.get("others"), limit, precision.device)
    if busy:
        log.warning("trainer.compile=auto: %s", busy)
    else:
        write_entry(key, {"rates": rates, "compile_s": round(secs, 2), "when": time.strftime("%Y-%m-%d %H:%M:%S")})
    pays = _pays(images, rates, 0.0)  # the probe has paid the compile: only the step rates matter now
    why = _why(rates, secs, images) + (f"; {busy}" if busy else "")
    return _unless_faulty(CompileChoice(pays, "probe", why, rates, secs), lambda: compiled if pays else model,
                          model, fault)


def _unless_faulty(choice: CompileChoice, module: Callable[[], Any], model, fault: Callable[[], Any]):
    """``choice`` and its module, or eager if compiling would win but its kernels compute a layer wrong
    (checked only then: the check compiles too)."""
    f = fault() if choice.compiled else None
    if f is None:
        return choice, module()
    log.warning("trainer.compile=auto: training eager: %s", f.describe())
    return CompileChoice(False, "check", f"{choice.why}; but {f.describe()}", choice.rates, choice.compile_s), model


def _why(rates: dict[str, float], compile_s: float, images: int) -> str:
    e, c = rates.get("eager", 0.0), rates.get("compiled", 0.0)
    return (f"training-step img/s compiled {c:,.0f} vs eager {e:,.0f} ({c / e if e else 0:.2f}x), "
            f"{compile_s:.0f} s to compile, {images:,} images to train")
