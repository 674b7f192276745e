"""``python -m archsearch.validate model=NAME [overrides] [format=table|json|svg|png|html] [out=PATH]``

Analyses a model spec without building it and checks it against the budget.
``format=svg`` (or ``png``, ``html``) draws the model instead of printing its table: the layers and
blocks (a block's paths side by side, each layer's output shape and parameters) beside the
receptive field growing layer by layer against the image size and the budget's minimum RF.
It writes the picture to ``out=PATH`` (default ``outputs/diagrams/NAME.svg``, ``.png``, ``.html``;
an ``out`` ending in .svg, .png or .html chooses the format by itself) and prints its path
and the verdict.
``python -m archsearch.validate SOURCE [init.ARG=VALUE ...] [in_channels=C] [input_size=S]`` checks a
PyTorch model instead (SOURCE: ``path/to/model.py:ClassName`` or ``package.module:ClassName``): it is
imported in memory as ``python -m archsearch.import`` would write it (running that file's code), and
nothing is written.
Exit codes: 0 accepted, 1 budget violations, 2 malformed spec or bad arguments.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

from archsearch import cli
from archsearch.config.compose import compose, spec_from_cfg
from archsearch.config.paths import available, base_dir
from archsearch.errors import ConfigError
from archsearch.files import write_whole
from archsearch.grammar.analysis import analyze
from archsearch.grammar.budget import check, parse_budget
from archsearch.grammar.diagram import FORMATS as PICTURES
from archsearch.grammar.diagram import render
from archsearch.grammar.table import format_table

__all__ = ["main", "run"]

FORMATS = ("table", "json", *PICTURES)


def run(overrides: Sequence[str]) -> tuple[int, str]:
    """Returns (exit code, text to print)."""
    own, overrides = cli.split_args(overrides, ("out",))
    imported, overrides = _imported(overrides)
    cfg = compose("validate", overrides)
    fmt = _format(str(cfg.get("format", "table")), own.get("out"))
    spec = spec_from_cfg(cfg.model) if imported is None else imported.analysis.spec
    budget = parse_budget(OmegaConf.to_container(cfg.budget, resolve=True))
    analysis = analyze(spec)
    violations = check(analysis, budget)
    if fmt in PICTURES:
        path = _picture_path(own.get("out"), spec.name, fmt)
        try:
            write_whole(path, render(analysis, budget, violations, fmt))
        except OSError as e:
            raise ConfigError(f"out: cannot write {path}: {e.strerror or e}") from None
        verdict = format_table(analysis, budget, violations).splitlines()[-1 - len(violations):]
        text = "\n".join([str(path), *verdict])
    elif fmt == "json":
        d = analysis.to_dict()
        d["budget"] = budget.__dict__
        d["violations"] = [v.to_dict() for v in violations]
        d["ok"] = not violations
        text = json.dumps(d, indent=2)
    else:
        text = format_table(analysis, budget, violations)
        if imported is not None:
            text = f"imported in memory from {imported.source}; checks passed: {imported.proof.summary()}\n{text}"
    return (1 if violations else 0), text


def _is_source(arg: str) -> bool:
    """``path/to/model.py:ClassName`` or ``package.module:Name``, not a Hydra override (``key=value``, ``~key``)."""
    return "=" not in arg and ":" in arg and not arg.startswith("~")


def _imported(argv: Sequence[str]):
    """A SOURCE on the command line imported in memory (and the other arguments), else (None, argv)."""

    if not any(_is_source(a) for a in argv):
        return None, list(argv)
    # a PyTorch model needs torch, which checking a YAML model never loads: imported only here
    from archsearch.importer import import_model
    from archsearch.importer.source import split_import_args

    source, mine, init, rest = split_import_args(argv, ("in_channels", "input_size"))
    size = cli.positive_int("input_size", mine["input_size"]) if "input_size" in mine else 32
    chans = cli.positive_int("in_channels", mine["in_channels"]) if "in_channels" in mine else None
    name = source.rpartition(":")[2]
    return import_model(source, name, init, chans, size), rest


def _format(fmt: str, out: str | None) -> str:
    """The format asked for; an ``out`` ending in .svg/.png/.html picks it when ``format`` is left alone."""
    if fmt not in FORMATS:
        raise ConfigError(f"format: unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if out is None:
        return fmt
    suffix = Path(out).suffix.lstrip(".").lower()
    if fmt == "table" and suffix in PICTURES:
        return suffix
    if fmt not in PICTURES:
        raise ConfigError(f"out: a picture's file; give format={'|'.join(PICTURES)} or an out ending in "
                          f"{', '.join('.' + p for p in PICTURES)} (got out={out!r} with format={fmt})")
    if suffix and suffix != fmt:
        raise ConfigError(f"out: {out!r} ends in .{suffix} but format={fmt}; end it in .{fmt} or leave format out")
    return fmt


def _picture_path(out: str | None, name: str, fmt: str) -> Path:
    if not out:
        return base_dir() / "outputs" / "diagrams" / f"{name}.{fmt}"
    path = Path(out).expanduser()
    if path.is_dir() or out.endswith(("/", "\\")):
        path = path / f"{name}.{fmt}"
    return path if path.is_absolute() else base_dir() / path


def _run_and_print(argv: list[str]) -> int:
    code, text = run(argv)
    try:
        print(text)
    except BrokenPipeError:  # `... | head`: the verdict's exit code still stands
        sys.stdout = None
    return code


def main(argv: Sequence[str] | None = None) -> int:
    return cli.start(__doc__, _run_and_print, argv, help_extra=lambda: f"models: {', '.join(available('model'))}")


if __name__ == "__main__":
    cli.run(main)
