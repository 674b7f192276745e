"""The budget gate: compose -> spec -> analysis -> budget check, nothing loaded yet.

Shared by the training job and the sweeper (which gates each candidate before launching
it), so neither imports the other.
"""

from __future__ import annotations

from archsearch.analysis import Report, analyze
from archsearch.budget import Violation, check, parse_budget
from archsearch.config import spec_from_cfg
from archsearch.spec import ModelSpec

__all__ = ["BudgetRejected", "gate", "verdict"]


class BudgetRejected(Exception):
    """The spec is well formed but breaks the budget; ``violations`` say how."""

    def __init__(self, spec: ModelSpec, violations: list[Violation]):
        self.spec, self.violations = spec, violations
        super().__init__(f"{spec.name} rejected by the budget: " + "; ".join(v.message for v in violations))


def verdict(cfg) -> tuple[ModelSpec, Report, list[Violation]]:
    """Parse, analyse and budget-check ``cfg.model`` -> (spec, report, the budget's violations,
    empty when it passes); raise SpecError when the spec itself is invalid."""
    from omegaconf import OmegaConf

    spec = spec_from_cfg(cfg.model)
    budget = parse_budget(OmegaConf.to_container(cfg.budget, resolve=True))
    report = analyze(spec)
    return spec, report, check(report, budget)


def gate(cfg) -> tuple[ModelSpec, Report]:
    """Parse, analyse and budget-check ``cfg.model``; raise SpecError / BudgetRejected."""
    spec, report, violations = verdict(cfg)
    if violations:
        raise BudgetRejected(spec, violations)
    return spec, report
