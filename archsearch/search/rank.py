"""Rank correlation between two lists of scores (e.g. a proxy's validation accuracy and the
full recipe's): scipy's Kendall tau-b and Spearman rho (average ranks for ties), with the
contract the report relies on: ``nan``, without scipy's warning, when there are fewer than two
pairs or one list is constant (no ranking to compare); a ``ValueError`` when the lists do not
pair up; values rounded to :data:`DIGITS` decimals, so that a ranking that agrees or disagrees
completely reads +1 or -1 in the report and its JSON (scipy's arithmetic can leave
-0.9999999999999999).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy import stats

__all__ = ["DIGITS", "kendall_tau_b", "spearman_rho"]

DIGITS = 12


def _comparable(x: Sequence[float], y: Sequence[float]) -> bool:
    """Whether the two lists hold a ranking to compare; lists of different lengths: ValueError."""
    if len(x) != len(y):
        raise ValueError(f"rank correlation: {len(x)} values against {len(y)}; the lists must pair up")
    return len(x) >= 2 and len(set(x)) > 1 and len(set(y)) > 1


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b: (concordant - discordant) pairs over the geometric mean of the pairs not
    tied in x and not tied in y."""
    if not _comparable(x, y):
        return math.nan
    return round(float(stats.kendalltau(x, y, variant="b").statistic), DIGITS)


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho: Pearson's correlation of the average ranks."""
    if not _comparable(x, y):
        return math.nan
    return round(float(stats.spearmanr(x, y).statistic), DIGITS)
