"""The config a candidate's budget gate reads, without a Hydra composition per candidate.

Hydra composes a config by reading and merging every file of its defaults list, then applies
the plain ``key=value`` overrides to the result. A sweep's candidates differ from each other
only in their sampled overrides, and when all of those are plain values (``model.w1=48``, not a
config group choice such as ``model=res_dilated``, nor ``+``/``~``/``++`` or a package), the
defaults list is the same for every candidate. So the sweep's own overrides are composed once,
and each candidate's values are applied to a copy of the sections the gate reads (``model`` and
``budget``), as Hydra's last step does: the same sections, in a fraction of the time. Anything
else, or any error on the way, answers None and the caller composes through Hydra, which then
gives its own verdict or message.

Only the gate reads these configs: a candidate that trains is composed through Hydra for its
job (its ``hydra`` node, run directory and recorded overrides are Hydra's business).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

__all__ = ["GateConfigs"]


class GateConfigs:
    """``compose``: the sweep's Hydra composition of a list of overrides (composed once here, for
    the sweep's base overrides, the first time a candidate asks)."""

    def __init__(self, compose: Callable[[list[str]], DictConfig], base: list[str]) -> None:
        self._compose, self._base_overrides = compose, list(base)
        self._base: DictConfig | None = None
        self._full: DictConfig | None = None
        self._groups: set[str] = set()
        self._parser = OverridesParser.create()
        self.fast = self.composed = 0  # how many candidates took each way

    def get(self, sampled: list[str]) -> DictConfig | None:
        """The gate's config for the base overrides plus ``sampled``; None: compose through Hydra."""
        try:
            changes = self._plain(sampled)
            if changes is None:
                return self._miss()
            if self._base is None:
                self._load_base()
            if any(key in self._groups for key, _ in changes):  # a config group, however it was spelled
                return self._miss()
            if any(OmegaConf.select(self._full, key, throw_on_missing=False, default=_ABSENT) is _ABSENT
                   for key, _ in changes):
                return self._miss()  # Hydra's message for a key that is not in the config
            cfg = copy.deepcopy(self._base)
            for key, value in changes:
                if key.split(".", 1)[0] in GATE_READS:
                    OmegaConf.update(cfg, key, value, merge=True)
            for section in GATE_READS:  # what the gate reads resolves here, or Hydra's way answers
                OmegaConf.to_container(cfg[section], resolve=True)
        except Exception:  # whatever Hydra would say about it, it says it on the slow path
            return self._miss()
        self.fast += 1
        return cfg

    def _load_base(self) -> None:
        """The base composition: whole, to check that a key exists, and the sections the gate reads, to copy."""
        full = self._compose(self._base_overrides)
        self._groups = set(full.hydra.runtime.choices) if "hydra" in full else set()
        base = OmegaConf.masked_copy(full, list(GATE_READS))
        OmegaConf.set_struct(base, True)
        self._full, self._base = full, base

    def _plain(self, sampled: list[str]) -> list[tuple[str, object]] | None:
        out = []
        for o in self._parser.parse_overrides(sampled):
            if (o.package is not None or o.is_add() or o.is_delete() or o.is_force_add() or o.is_sweep_override()
                    or o.is_hydra_override() or "/" in o.key_or_group):
                return None
            out.append((o.key_or_group, o.value()))
        return out

    def _miss(self) -> None:
        self.composed += 1
        return None


_ABSENT = object()
GATE_READS = ("model", "budget")  # the sections archsearch.config.gate.verdict reads
