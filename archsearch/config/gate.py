"""The budget gate: compose -> spec -> analysis -> budget check, nothing loaded yet.

Shared by the training job and the sweeper (which gates each candidate before launching
it), so neither imports the other.
"""

from __future__ import annotations

from omegaconf import OmegaConf

from archsearch.config.compose import spec_from_cfg
from archsearch.grammar.analysis import Analysis, analyze
from archsearch.grammar.budget import Violation, check, parse_budget
from archsearch.grammar.spec import ModelSpec

__all__ = ["BudgetRejected", "gate", "verdict"]


class BudgetRejected(Exception):
    """The spec is well formed but breaks the budget; ``violations`` say how."""

    def __init__(self, spec: ModelSpec, violations: list[Violation]):
        self.spec, self.violations = spec, violations
        super().__init__(f"{spec.name} rejected by the budget: " + "; ".join(v.message for v in violations))


def verdict(cfg) -> tuple[ModelSpec, Analysis, list[Violation]]:
    """Parse, analyse and budget-check ``cfg.model`` -> (spec, analysis, the budget's violations,
    empty when it passes); raise SpecError when the spec itself is invalid."""
    spec = spec_from_cfg(cfg.model)
    budget = parse_budget(OmegaConf.to_container(cfg.budget, resolve=True))
    analysis = analyze(spec)
    return spec, analysis, check(analysis, budget)


def gate(cfg) -> tuple[ModelSpec, Analysis]:
    """Parse, analyse and budget-check ``cfg.model``; raise SpecError / BudgetRejected."""
    spec, analysis, violations = verdict(cfg)
    if violations:
        raise BudgetRejected(spec, violations)
    return spec, analysis
