"""``python -m archsearch.validate model=NAME [overrides] [format=table|json]``

Analyses a model spec without building it and checks it against the budget.
Exit codes: 0 accepted, 1 budget violations, 2 malformed spec or bad arguments.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from omegaconf import OmegaConf

from archsearch import cli
from archsearch.config.compose import compose, spec_from_cfg
from archsearch.config.paths import available
from archsearch.errors import ConfigError
from archsearch.grammar.analysis import analyze
from archsearch.grammar.budget import check, parse_budget
from archsearch.grammar.table import format_table

__all__ = ["main", "run"]

FORMATS = ("table", "json")


def run(overrides: Sequence[str]) -> tuple[int, str]:
    """Returns (exit code, text to print)."""
    cfg = compose("validate", overrides)
    fmt = cfg.get("format", "table")
    if fmt not in FORMATS:
        raise ConfigError(f"format: unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    spec = spec_from_cfg(cfg.model)
    budget = parse_budget(OmegaConf.to_container(cfg.budget, resolve=True))
    analysis = analyze(spec)
    violations = check(analysis, budget)
    if fmt == "json":
        d = analysis.to_dict()
        d["budget"] = budget.__dict__
        d["violations"] = [v.to_dict() for v in violations]
        d["ok"] = not violations
        text = json.dumps(d, indent=2)
    else:
        text = format_table(analysis, budget, violations)
    return (1 if violations else 0), text


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
