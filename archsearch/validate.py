"""``python -m archsearch.validate model=NAME [overrides] [format=table|json]``

Analyses a model spec without building it and checks it against the budget.
Exit codes: 0 accepted, 1 budget violations, 2 malformed spec or bad arguments.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from archsearch.config.compose import compose, spec_from_cfg
from archsearch.config.paths import available
from archsearch.errors import BudgetError, ConfigError, SpecError
from archsearch.grammar.analysis import analyze
from archsearch.grammar.budget import check, parse_budget
from archsearch.grammar.table import format_table

__all__ = ["main", "run"]

FORMATS = ("table", "json")


def run(overrides: Sequence[str]) -> tuple[int, str]:
    """Returns (exit code, text to print)."""
    from omegaconf import OmegaConf

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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        print(f"models: {', '.join(available('model'))}")
        return 0
    try:
        code, text = run(argv)
    except (SpecError, ConfigError, BudgetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        print(text)
    except BrokenPipeError:  # `... | head`
        sys.stdout = None
    return code


if __name__ == "__main__":
    from archsearch import cli

    cli.run(main)
