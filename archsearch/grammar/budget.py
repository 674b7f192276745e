"""Budget rules: a :class:`Analysis` in, a list of :class:`Violation` out (empty = accepted).

The defaults are the ERA-V1 S9 assignment's rules (``conf/budget/default.yaml``):
at most 200,000 parameters, receptive field at least 44, no max-pooling, at least one
depthwise-separable layer (a sepconv, or a conv with groups equal to its input channels
whose output a 1x1 conv takes), at least one dilated layer, global average pooling before
the classifier (gap, or an avgpool whose output is 1x1). Every rule can be switched off or changed from the config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from archsearch.errors import BudgetError
from archsearch.grammar.analysis import Analysis

__all__ = ["Budget", "Violation", "check", "parse_budget"]


@dataclass(frozen=True)
class Budget:
    max_params: int | None = 200_000
    min_rf: int | None = 44
    max_macs: int | None = None
    forbid_maxpool: bool = True
    require_separable: bool = True
    require_dilated: bool = True
    require_gap: bool = True


@dataclass(frozen=True)
class Violation:
    rule: str
    measured: float
    limit: float
    message: str
    # relative size of the violation (>0), used as an Optuna constraint value
    amount: float = 1.0

    def to_dict(self) -> dict:
        return {"rule": self.rule, "measured": self.measured, "limit": self.limit,
                "message": self.message, "amount": self.amount}


def parse_budget(cfg: Mapping | None) -> Budget:
    """Budget from a mapping; unknown keys and wrong types are one-line errors naming the key."""
    cfg = dict(cfg or {})
    known = {f.name: f for f in fields(Budget)}
    kw = {}
    for key, v in cfg.items():
        if key not in known:
            raise BudgetError(f"budget.{key}: unknown field; valid fields: {', '.join(known)}")
        if key.startswith(("max_", "min_")):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise BudgetError(f"budget.{key}: must be a non-negative int or null (no limit), got {v!r}")
        elif not isinstance(v, bool):
            raise BudgetError(f"budget.{key}: must be true or false, got {v!r}")
        kw[key] = v
    return Budget(**kw)


def check(analysis: Analysis, budget: Budget) -> list[Violation]:
    v: list[Violation] = []
    if budget.max_params is not None and analysis.params > budget.max_params:
        over = analysis.params - budget.max_params
        v.append(Violation("max_params", analysis.params, budget.max_params,
                           f"params {analysis.params:,} exceed max_params {budget.max_params:,} (by {over:,})",
                           over / max(budget.max_params, 1)))
    if budget.max_macs is not None and analysis.macs > budget.max_macs:
        over = analysis.macs - budget.max_macs
        v.append(Violation("max_macs", analysis.macs, budget.max_macs,
                           f"MACs {analysis.macs:,} exceed max_macs {budget.max_macs:,} (by {over:,})",
                           over / max(budget.max_macs, 1)))
    if budget.min_rf is not None and analysis.rf < budget.min_rf:
        v.append(Violation("min_rf", analysis.rf, budget.min_rf,
                           f"receptive field {analysis.rf} < min_rf {budget.min_rf}",
                           (budget.min_rf - analysis.rf) / max(budget.min_rf, 1)))
    if budget.forbid_maxpool and analysis.n_maxpool:
        v.append(Violation("forbid_maxpool", analysis.n_maxpool, 0,
                           f"{analysis.n_maxpool} maxpool layer(s); forbid_maxpool allows 0"))
    if budget.require_separable and not analysis.n_separable:
        v.append(Violation("require_separable", 0, 1,
                           "0 depthwise-separable layers (sepconv, or conv groups=C then a 1x1 conv); "
                           "require_separable needs at least 1"))
    if budget.require_dilated and not analysis.n_dilated:
        v.append(Violation("require_dilated", 0, 1,
                           "0 dilated layers (d > 1); require_dilated needs at least 1"))
    if budget.require_gap and not analysis.has_gap:
        v.append(Violation("require_gap", 0, 1,
                           "no global average pooling (gap, or an avgpool whose output is 1x1; a global maxpool "
                           "does not count) before the classifier; require_gap needs one"))
    return v
