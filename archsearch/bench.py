"""``python -m archsearch.bench [parts=train,breakdown,validator,sweep,memory] [key=value ...]``

Side-by-side measurements in one process, on one machine, on the same data; each figure is
the median of several repetitions after a warm-up, with its spread (min-max). Writes the
table, with machine, device, torch version and date, to ``BENCHMARKS.md``.

Options (key=value):
  parts        comma list of: train, breakdown, compile, validator, sweep, concurrency, memory (default: all)
  model        the network of parts train, breakdown, compile (default dilated_sep; any conf/model name)
  data         synthetic (default) | folder;  data.root=PATH for folder (e.g. the CIFAR-10 copy)
  images       training images per measured epoch (default 4096)
  reps         measured repetitions after one warm-up (default 3)
  batch        batch size for both loops (default 128)
  workers      DataLoader workers for both loops in part train (default auto, as training uses)
  compile      part train: auto (default: what trainer.compile=auto picks for a run of run_images images,
               probing compiled vs eager if that run is long enough) | true | false
  run_images   part train: the run that auto decides for, and row 1b projects (default 900000: 20 epochs
               of CIFAR-10's 45,000 training images)
  trials       sweep part: trials in the overhead sweep (default 200)
  conc_trials  concurrency part: trials per sweep (default 8); conc_images training images (default 2000;
               as many validation and test images, up to 1000),
               conc_epochs epochs per trial (default 2)
  mem_images   memory part: training images (default 50000, CIFAR-10's size); mem_workers (default 2)
  out          where to write the table (default BENCHMARKS.md; out=- prints only)
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from archsearch import cli
from archsearch.benchmark.inputs import model_name
from archsearch.benchmark.machine import describe_machine
from archsearch.benchmark.parts import PARTS
from archsearch.config.paths import available
from archsearch.errors import ConfigError
from archsearch.training.compilation import compile_setting

__all__ = ["OPTIONS", "main"]

# every key=value this command reads (the docstring says what each does)
OPTIONS = ("parts", "model", "data", "data.root", "images", "reps", "batch", "workers", "compile", "run_images",
           "trials", "conc_trials", "conc_images", "conc_epochs", "mem_images", "mem_workers", "out")


def main(argv: Sequence[str] | None = None) -> int:
    return cli.start(__doc__, _bench, argv)


def _bench(argv: list[str]) -> int:
    opts = parse_options(argv)
    parts = chosen_parts(opts)
    check_options(opts)
    logging.disable(logging.INFO)
    rows: list = []
    notes: list = []
    for p in parts:
        t0 = time.time()
        print(f"bench: {p} ...", file=sys.stderr, flush=True)
        PARTS[p](opts, rows, notes)
        print(f"bench: {p} done in {time.time() - t0:.0f}s: {rows[-1]}", file=sys.stderr, flush=True)
    text = markdown(argv, opts, rows, notes)
    print(text)
    out = opts.get("out", "BENCHMARKS.md")
    if out != "-":
        Path(out).write_text(text)
        print(f"wrote {out}", file=sys.stderr)
    return 0


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
    """Option ``parts`` (default: all, in the registry's order) -> the part names, each checked."""
    parts = [p for p in str(opts.get("parts", ",".join(PARTS))).split(",") if p]
    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise ConfigError(f"parts: unknown part {bad[0]!r}; choose from {', '.join(PARTS)}")
    return parts


def check_options(opts: dict[str, str]) -> None:
    """The model, compile and data options, refused in one line before anything is measured."""
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
        f"- machine: {describe_machine()}", f"- data: {data}",
        f"- model (parts train, breakdown, compile): {model_name(opts)}", "",
        *table, "", *[f"- {n}" for n in notes], ""])


if __name__ == "__main__":
    cli.run(main)
