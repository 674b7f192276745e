"""How the benchmark writes a measurement: the median of its repetitions and their range."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

__all__ = ["spread"]


def _median_range(xs: Sequence[float]) -> tuple[float, float, float]:
    return statistics.median(xs), min(xs), max(xs)


def spread(xs: Sequence[float], unit: str = "", digits: int = 0) -> str:
    """``median<unit> (min-max)``, with thousands separators and ``digits`` decimals."""
    m, lo, hi = _median_range(xs)
    f = f"{{:,.{digits}f}}"
    return f"{f.format(m)}{unit} ({f.format(lo)}-{f.format(hi)})"
