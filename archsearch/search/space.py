"""The search space: Hydra's override grammar (``choice``, ``range``, ``interval``, ``tag``) parsed
into sweep dimensions, and each dimension suggested through an Optuna trial.
"""

from __future__ import annotations

from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

from archsearch.errors import SweepConfigError

MEASURED = ("params", "macs", "rf")  # objectives taken from the analysis, not the job


DIRECTIONS = ("maximize", "minimize")


# ------------------------------------------------------------------ search space
def parse_space(params: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """Hydra override grammar -> ({name: sweep object}, [fixed overrides])."""
    parser = OverridesParser.create()
    space: dict[str, Any] = {}
    fixed: list[str] = []
    for key, value in params.items():
        try:
            ov = parser.parse_override(f"{key}={value}")
        except Exception as e:
            raise SweepConfigError(f"hydra.sweeper.params.{key}: cannot parse {value!r}: "
                                   f"{str(e).splitlines()[0]}") from None
        if ov.is_sweep_override():
            space[ov.get_key_element()] = ov.value()
        else:
            fixed.append(f"{key}={value}")
    return space, fixed


def sweep_values(sweep) -> list:
    if isinstance(sweep, ChoiceSweep):
        return list(sweep.list)
    if isinstance(sweep, RangeSweep):
        vals, v = [], sweep.start
        while (sweep.step > 0 and v < sweep.stop) or (sweep.step < 0 and v > sweep.stop):
            vals.append(v)
            v += sweep.step
        return vals
    return []


def suggest(trial, name: str, sweep) -> Any:
    if isinstance(sweep, ChoiceSweep):
        choices = [c if isinstance(c, (str, int, float, bool)) or c is None else str(c) for c in sweep.list]
        return trial.suggest_categorical(name, choices)
    if isinstance(sweep, RangeSweep):
        vals = sweep_values(sweep)
        if not vals:
            raise SweepConfigError(f"hydra.sweeper.params.{name}: empty range")
        if all(isinstance(v, int) for v in vals):
            return trial.suggest_int(name, min(vals), max(vals), step=abs(int(sweep.step)))
        return trial.suggest_categorical(name, vals)
    if isinstance(sweep, IntervalSweep):
        log_scale = "log" in (sweep.tags or set())
        if isinstance(sweep.start, int) and isinstance(sweep.end, int) and not isinstance(sweep.start, bool):
            return trial.suggest_int(name, sweep.start, sweep.end, log=log_scale)
        return trial.suggest_float(name, float(sweep.start), float(sweep.end), log=log_scale)
    raise SweepConfigError(f"hydra.sweeper.params.{name}: unsupported sweep {type(sweep).__name__}; "
                           "use choice(...), range(...), interval(...) or tag(log, interval(...))")
