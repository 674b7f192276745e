"""The per-layer table of an analysis (what ``validate`` prints and a training run logs as
``model_table.txt``): path, op, details, output shape, params, MACs, RF and jump per layer,
the totals, and the budget's verdict."""

from __future__ import annotations

from archsearch.grammar.analysis import Analysis
from archsearch.grammar.budget import Budget, Violation

__all__ = ["format_table"]


def _shape(s) -> str:
    return "x".join(str(x) for x in s)


def format_table(analysis: Analysis, budget: Budget, violations: list[Violation]) -> str:
    spec = analysis.spec
    rows = [("path", "op", "details", "output", "params", "MACs", "RF", "jump")]
    for l in analysis.layers:  # a block's row, then its paths' rows indented under it
        path = "  " * l.depth + l.path.removeprefix("model.")
        params = f"({l.params:,})" if l.is_block else f"{l.params:,}"  # a block's: the sum of its rows
        macs = f"({l.macs:,})" if l.is_block else f"{l.macs:,}"
        rows.append((path, l.op, l.describe(spec.order), _shape(l.out_shape), params, macs,
                     str(l.rf) if l.spatial else "-", str(l.jump) if l.spatial else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    right = {4, 5, 6, 7}
    lines = [f"{spec.name}: input {_shape(spec.input_shape)}, {spec.num_classes} classes, order {'->'.join(spec.order)}"]
    for j, r in enumerate(rows):
        lines.append("  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append(f"total: {analysis.params:,} params, {analysis.macs:,} MACs, receptive field {analysis.rf} "
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
