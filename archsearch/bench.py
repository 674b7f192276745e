"""``python -m archsearch.bench [parts=train,breakdown,probe,validator,sweep,memory] [key=value ...]``

Side-by-side measurements in one process, on one machine, on the same data; each figure is
the median of several repetitions after a warm-up, with its spread (min-max). Writes the
table, with machine, device, torch version and date, to a new file under ``outputs/bench/`` (or
where ``out`` says). A part that fails gets a row saying so, and the others still run and are
written. The repository's ``BENCHMARKS.md`` gathers such tables by hand, so a run never writes
over it unless told to (``out=BENCHMARKS.md``).

The GPU check, on a machine with one: ``python -m archsearch.bench device=cuda`` (synthetic data,
nothing downloaded; parts train, breakdown, compile, kernels, workers, slots, system_metrics).

Options (key=value):
  parts        comma list of: train, breakdown, compile, probe, kernels, layers, validator, sweep, concurrency, memory, workers, slots, system_metrics (default: all)
               (with device=cuda... and no parts: the GPU check's parts)
  device       auto (default: a GPU if there is one) | cpu | cuda | cuda:N: what the parts train on
  model        the network of parts train, breakdown, compile, probe, kernels, layers (default dilated_sep; any conf/model name)
  data         synthetic (default) | folder;  data.root=PATH for folder (e.g. the CIFAR-10 copy)
  images       training images per measured epoch (default 4096; 32768 on a GPU)
  reps         measured repetitions after one warm-up (default 3)
  batch        batch size for both loops (default 128)
  workers      DataLoader workers for both loops in part train (default auto, as training uses)
  compile      part train: auto (default: what trainer.compile=auto picks for a run of run_images images,
               probing compiled vs eager if that run is long enough) | true | false;
               part kernels: false leaves out the compiled check
  run_images   part train: the run that auto decides for, and row 1b projects (default 900000: 20 epochs
               of CIFAR-10's 45,000 training images)
  trials       sweep part: trials in the overhead sweep (default 200)
  conc_trials  concurrency and slots parts: trials per sweep (default 8); conc_images training images (default 2000;
               as many validation and test images, up to 1000),
               conc_epochs epochs per trial (default 2)
  mem_images   memory part: training images (default 50000, CIFAR-10's size); mem_workers (default 2)
  out          where to write the table (default outputs/bench/DATE_TIME.md, a new file each run,
               DATE_TIME-2.md for a second run started in the same second;
               out=FILE replaces FILE, whose folder must exist; out=- prints only)
"""

from __future__ import annotations

import itertools
import logging
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from archsearch import cli
from archsearch.benchmark.inputs import bench_device, model_name
from archsearch.benchmark.machine import describe_machine
from archsearch.benchmark.parts import GPU_PARTS, PARTS
from archsearch.config.paths import available
from archsearch.errors import ConfigError
from archsearch.files import write_whole
from archsearch.training.compilation import compile_setting

__all__ = ["OPTIONS", "main"]

# every key=value this command reads (the docstring says what each does)
OPTIONS = ("parts", "device", "model", "data", "data.root", "images", "reps", "batch", "workers", "compile", "run_images",
           "trials", "conc_trials", "conc_images", "conc_epochs", "mem_images", "mem_workers", "out")


def main(argv: Sequence[str] | None = None) -> int:
    return cli.start(__doc__, _bench, argv)


def _bench(argv: list[str]) -> int:
    opts = parse_options(argv)
    parts = chosen_parts(opts)
    check_options(opts)
    out = output_path(opts)
    logging.disable(logging.INFO)
    rows: list = []
    notes: list = []
    for p in parts:
        t0 = time.time()
        print(f"bench: {p} ...", file=sys.stderr, flush=True)
        try:
            PARTS[p](opts, rows, notes)
        except Exception as e:  # one part's failure (a GPU quirk, a missing tool) costs its rows, not the file
            first = (str(e).strip().splitlines() or [""])[-1][:200].replace("|", "/")
            rows.append((f"{p}: not measured", "", f"failed: {type(e).__name__}", first))
            notes.append(f"part {p} failed after {time.time() - t0:.0f}s: {type(e).__name__}: {first}")
            traceback.print_exc()
        print(f"bench: {p} done in {time.time() - t0:.0f}s: {rows[-1] if rows else ''}", file=sys.stderr, flush=True)
    text = markdown(argv, opts, rows, notes)
    print(text)
    if out is not None:
        out = write_whole(out if "out" in opts else _unused(out), text)
        print(f"wrote {out}", file=sys.stderr)
    return 0


def output_path(opts: dict[str, str]) -> Path | None:
    """Option ``out`` -> the file the table goes to (None for ``out=-``), checked before anything is
    measured: a folder that is not there would otherwise lose a run of minutes at its end."""
    out = opts.get("out")
    if out == "-":
        return None
    if out is None:
        return Path("outputs") / "bench" / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}.md"
    path = Path(out).expanduser()
    if path.is_dir():
        raise ConfigError(f"out: {out} is a folder; give a file name (e.g. out={path / 'bench.md'}) or out=- to print only")
    if not path.parent.is_dir():
        raise ConfigError(f"out: folder {path.parent} does not exist; create it, or give out=- to print only")
    return path


def _unused(path: Path) -> Path:
    """``path``, or ``NAME-2.md``, ``NAME-3.md``, ... where it is taken (two runs started in one second),
    claimed at once so that a run beside this one does not take the same name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for n in itertools.count(1):
        p = path if n == 1 else path.with_name(f"{path.stem}-{n}{path.suffix}")
        try:
            p.open("x").close()
            return p
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


def parse_options(argv: Sequence[str]) -> dict[str, str]:
    """``key=value`` arguments -> {key: value}; refuses anything else and a key not in :data:`OPTIONS`."""
    opts: dict[str, str] = {}
    for a in argv:
        k, sep, v = a.partition("=")
        if not sep:
            raise ConfigError(f"expected key=value, got {a!r}; see --help")
        if k not in OPTIONS:
            raise ConfigError(f"unknown option {k!r}; valid options: {', '.join(OPTIONS)}")
        opts[k] = v
    return opts


def chosen_parts(opts: dict[str, str]) -> list[str]:
    """Option ``parts`` (default: all, in the registry's order; with ``device=cuda...`` the GPU
    check's) -> the part names, each checked."""
    default = GPU_PARTS if str(opts.get("device", "auto")).startswith("cuda") else PARTS
    parts = [p for p in str(opts.get("parts", ",".join(default))).split(",") if p]
    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise ConfigError(f"parts: unknown part {bad[0]!r}; choose from {', '.join(PARTS)}")
    return parts


def check_options(opts: dict[str, str]) -> None:
    """The device, model, compile and data options, refused in one line before anything is measured."""
    try:
        bench_device(opts)
    except ConfigError as e:  # e.g. cuda on a machine without a GPU
        raise ConfigError(str(e).replace("trainer.device", "device", 1)) from None
    if model_name(opts) not in available("model"):
        raise ConfigError(f"model: unknown model {model_name(opts)!r}; choose one of {', '.join(available('model'))}")
    try:
        compile_setting(opts.get("compile", "auto"))
    except ConfigError as e:  # not a mode, or true without a C++ compiler
        raise ConfigError(str(e).replace("trainer.compile", "compile", 1)) from None
    if opts.get("data", "synthetic") not in ("synthetic", "folder"):
        raise ConfigError(f"data: unknown data {opts['data']!r}; choose one of synthetic, folder")
    if opts.get("data") == "folder" and not opts.get("data.root"):
        raise ConfigError("data.root: required with data=folder")


def markdown(argv: Sequence[str], opts: dict[str, str], rows: list, notes: list) -> str:
    """BENCHMARKS.md: how it was made, the machine, the table of rows, the parts' notes."""
    table = ["| measurement | baseline | archsearch | ratio |", "|---|---|---|---|"]
    table += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    data = "synthetic images" if opts.get("data", "synthetic") == "synthetic" else f"image folder {opts['data.root']}"
    return "\n".join([
        "# Benchmarks", "",
        "Written by `python -m archsearch.bench " + " ".join(argv) + "`. Each cell: median (min-max) of the "
        "measured repetitions after a warm-up; every comparison ran side by side in one invocation.", "",
        f"- machine: {describe_machine()}", f"- parts ran on: {bench_device(opts)}", f"- data: {data}",
        f"- model (parts train, breakdown, compile, probe, kernels, layers): {model_name(opts)}", "",
        *table, "", *[f"- {n}" for n in notes], ""])


if __name__ == "__main__":
    cli.run(main)
