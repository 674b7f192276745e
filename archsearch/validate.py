"""``python -m archsearch.validate model=NAME [overrides] [format=table|json]``

Analyses a model spec without building it and checks it against the budget.
Exit codes: 0 accepted, 1 budget violations, 2 malformed spec or bad arguments.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from archsearch.analysis import Report, analyze
from archsearch.budget import Budget, Violation, check, parse_budget
from archsearch.config import available, compose, spec_from_cfg
from archsearch.errors import BudgetError, ConfigError, SpecError

__all__ = ["format_table", "main", "run"]

FORMATS = ("table", "json")


def _shape(s) -> str:
    return "x".join(str(x) for x in s)


def format_table(report: Report, budget: Budget, violations: list[Violation]) -> str:
    spec = report.spec
    rows = [("path", "op", "details", "output", "params", "MACs", "RF", "jump")]
    for l in report.layers:  # a block's row, then its paths' rows indented under it
        path = "  " * l.depth + l.path.removeprefix("model.")
        params = f"({l.params:,})" if l.is_block else f"{l.params:,}"  # a block's: the sum of its rows
        macs = f"({l.macs:,})" if l.is_block else f"{l.macs:,}"
        rows.append((path, l.op, l.desc, _shape(l.out_shape), params, macs,
                     str(l.rf) if l.spatial else "-", str(l.jump) if l.spatial else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    right = {4, 5, 6, 7}
    lines = [f"{spec.name}: input {_shape(spec.input_shape)}, {spec.num_classes} classes, order {'->'.join(spec.order)}"]
    for j, r in enumerate(rows):
        lines.append("  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append(f"total: {report.params:,} params, {report.macs:,} MACs, receptive field {report.rf} "
                 f"(last spatial map before global pooling)")
    limits = []
    if budget.max_params is not None:
        limits.append(f"params <= {budget.max_params:,}")
    if budget.min_rf is not None:
        limits.append(f"RF >= {budget.min_rf}")
    if budget.max_macs is not None:
        limits.append(f"MACs <= {budget.max_macs:,}")
    for flag, text in (("forbid_maxpool", "no maxpool"), ("require_separable", "separable"),
                       ("require_dilated", "dilated"), ("require_gap", "GAP")):
        if getattr(budget, flag):
            limits.append(text)
    if violations:
        lines.append(f"REJECTED {spec.name}: {len(violations)} budget violation(s)")
        lines += [f"  - {v.message}" for v in violations]
    else:
        lines.append(f"OK {spec.name}: within budget ({', '.join(limits)})")
    return "\n".join(lines)


def run(overrides: Sequence[str]) -> tuple[int, str]:
    """Returns (exit code, text to print)."""
    from omegaconf import OmegaConf

    cfg = compose("validate", overrides)
    fmt = cfg.get("format", "table")
    if fmt not in FORMATS:
        raise ConfigError(f"format: unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    spec = spec_from_cfg(cfg.model)
    budget = parse_budget(OmegaConf.to_container(cfg.budget, resolve=True))
    report = analyze(spec)
    violations = check(report, budget)
    if fmt == "json":
        d = report.to_dict()
        d["budget"] = budget.__dict__
        d["violations"] = [v.to_dict() for v in violations]
        d["ok"] = not violations
        text = json.dumps(d, indent=2)
    else:
        text = format_table(report, budget, violations)
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
