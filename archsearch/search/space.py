"""The search space: Hydra's override grammar parsed into search dimensions, checked, and each
dimension suggested through an Optuna trial.

How each form maps (the README's sweep section has the same table):

    choice(a, b, ...) / a,b,...       categorical; list and dict choices reach the job as lists and
                                      dicts (Optuna stores them as their override text)
    range(start, stop[, step])        ints: a stepped int; floats: a stepped float whose values are
                                      start + i*step computed in decimal (0.3, not 0.30000000000000004);
                                      the stop is excluded, as in Hydra's own sweeper and Python
    interval(low, high)               a float (an int when both ends are ints: int(interval(...)))
    tag(log, interval(low, high))     the same on a log scale (low must be above 0)
    +key=... / ++key=...              the prefix is kept: the job adds the key to its config

A dimension's key is Optuna's parameter name; :meth:`Dimension.override` is what the job gets.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from omegaconf import OmegaConf

from archsearch.errors import SweepConfigError
from archsearch.search.study import override_key, override_value, split_sweep_args

__all__ = ["DIRECTIONS", "MEASURED", "TIMED", "Dimension", "check_keys", "merge_space", "parse_space", "suggest"]

MEASURED = ("params", "macs", "rf")  # objectives taken from the analysis, not the job
TIMED = ("ms_per_image",)  # objectives the sweeper times on its machine (archsearch.training.train_speed), no job
DIRECTIONS = ("maximize", "minimize")
_PRIMITIVE = (str, int, float, bool, type(None))  # what Optuna's categorical distribution stores as it is


@dataclass(frozen=True)
class Dimension:
    """One searched key: Hydra's sweep over it and how the job receives a value."""

    key: str  # the config key, without prefix: Optuna's parameter name
    sweep: Any  # hydra's ChoiceSweep | RangeSweep | IntervalSweep
    prefix: str = ""  # "+" or "++" as the user wrote it: the job adds the key

    @property
    def where(self) -> str:
        return f"hydra.sweeper.params.{self.key}"

    def values(self) -> list:
        """The values of a discrete dimension (a choice's items, a range's numbers); [] for an interval."""
        if isinstance(self.sweep, ChoiceSweep):
            return list(self.sweep.list)
        if isinstance(self.sweep, RangeSweep):
            return _range_values(self.sweep)
        return []

    def labels(self) -> list | None:
        """A choice's items as Optuna stores them: as they are when all are plain values, else each
        as its override text (a list or dict choice); None for ranges and intervals."""
        if not isinstance(self.sweep, ChoiceSweep):
            return None
        items = list(self.sweep.list)
        return items if all(isinstance(c, _PRIMITIVE) for c in items) else [override_value(c) for c in items]

    def override(self, value: Any) -> str:
        return f"{self.prefix}{self.key}={override_value(value)}"


def parse_space(params: dict[str, str]) -> tuple[dict[str, Dimension], list[str]]:
    """``{key: Hydra override text}`` -> ({key: a checked :class:`Dimension`}, [the fixed overrides]).
    A key may carry ``+``/``++``; a distribution that cannot be searched is a :class:`SweepConfigError`."""
    parser = OverridesParser.create()
    space: dict[str, Dimension] = {}
    fixed: list[str] = []
    for key, value in params.items():
        try:
            ov = parser.parse_override(f"{key}={value}")
        except Exception as e:  # Hydra's OverrideParseException: the first line says where
            raise SweepConfigError(f"hydra.sweeper.params.{key.lstrip('+~')}: cannot parse {value!r}: "
                                   f"{str(e).splitlines()[0]}") from None
        if not ov.is_sweep_override():
            fixed.append(f"{key}={value}")
            continue
        prefix = "++" if ov.is_force_add() else "+" if ov.is_add() else ""
        dim = Dimension(ov.key_or_group, ov.value(), prefix)
        _check(dim, value)
        space[dim.key] = dim
    return space, fixed


def merge_space(params: dict[str, str],
                arguments: list[str]) -> tuple[dict[str, Dimension], list[str], list[str]]:
    """The sweep file's ``hydra.sweeper.params`` and the command line -> (the search space, the
    overrides every trial gets, the searched keys the command line pinned). The command line is the
    user's last word, as in Hydra: its plain value of a key fixes it (the key leaves the search space),
    its dimension replaces the sweep file's, and its plain overrides come after the file's fixed ones."""
    plain, cli_space = split_sweep_args(arguments)
    on_cli = {override_key(a) for a in plain}
    file_space, file_fixed = parse_space(params)
    cli_dims, cli_fixed = parse_space(cli_space)
    pinned = [a for a in plain if override_key(a) in file_space]
    # the sweep file's order, a dimension the command line redefines in its place, new ones after
    space = {k: cli_dims.get(k, d) for k, d in file_space.items() if k not in on_cli} | cli_dims
    fixed = [f for f in file_fixed if override_key(f) not in on_cli and override_key(f) not in space]
    return space, fixed + plain + cli_fixed, pinned


def check_keys(space: dict[str, Dimension], cfg) -> None:
    """A dimension over a key the composed config ``cfg`` lacks would have every candidate rejected ('Could
    not override'): one line instead. Keys added with ``+``, and keys under a config group the search
    itself chooses (``model=choice(a,b)``), are the candidates' to tell."""
    missing = object()
    for key, dim in space.items():
        if dim.prefix or "." not in key or key.split(".")[0] in space:
            continue
        if OmegaConf.select(cfg, key, default=missing) is missing:
            raise SweepConfigError(f"{dim.where}: no such key in the composed config (model "
                                   f"{cfg.model.get('name')!r}); '+{key}' adds a new one")


def _check(dim: Dimension, text: str) -> None:
    """What Optuna would refuse (or silently misread), said in the user's terms."""
    sw, where = dim.sweep, dim.where
    if not isinstance(sw, (ChoiceSweep, RangeSweep, IntervalSweep)):
        raise SweepConfigError(f"{where}: unsupported sweep {text!r}; use choice(...), range(...), "
                               "interval(...) or tag(log, interval(...))")
    unknown = set(sw.tags or ()) - {"log"}
    if unknown:
        raise SweepConfigError(f"{where}: unknown tag {sorted(unknown)[0]!r} in {text!r}; the one tag the "
                               "sweeper reads is log: tag(log, interval(low, high))")
    if isinstance(sw, IntervalSweep):
        if sw.start > sw.end:
            raise SweepConfigError(f"{where}: {text}: the low end {sw.start} is above the high end {sw.end}")
        if "log" in (sw.tags or ()) and sw.start <= 0:
            raise SweepConfigError(f"{where}: {text}: a log scale needs a low end above 0, got {sw.start}")
    elif "log" in (sw.tags or ()):
        raise SweepConfigError(f"{where}: {text}: log applies to an interval only, tag(log, interval(low, high))")
    if isinstance(sw, RangeSweep):
        if sw.step == 0:
            raise SweepConfigError(f"{where}: {text}: the step must not be 0")
        if not dim.values():
            raise SweepConfigError(f"{where}: {text} holds no values (the stop is excluded, as in Hydra)")


def _range_values(sw: RangeSweep) -> list:
    """start, start + step, ... up to the stop (excluded), computed in decimal so that a float range
    holds the numbers written (0.1 * 3 is 0.3 here); ints stay ints."""
    if all(isinstance(x, int) and not isinstance(x, bool) for x in (sw.start, sw.stop, sw.step)):
        return list(range(sw.start, sw.stop, sw.step))
    start, stop, step = (decimal.Decimal(str(x)) for x in (sw.start, sw.stop, sw.step))
    n = max(0, int(((stop - start) / step).to_integral_value(rounding=decimal.ROUND_CEILING)))
    return [float(start + i * step) for i in range(n)]


def suggest(trial, dim: Dimension) -> Any:
    """The trial's value of ``dim``, drawn by the study's sampler, as the job receives it."""
    sw = dim.sweep
    if isinstance(sw, ChoiceSweep):
        labels = dim.labels()
        label = trial.suggest_categorical(dim.key, labels)
        return dim.values()[labels.index(label)]
    if isinstance(sw, RangeSweep):
        vals = dim.values()
        low, high, step = min(vals), max(vals), abs(sw.step)
        if all(isinstance(v, int) for v in vals):
            return trial.suggest_int(dim.key, low, high, step=step)
        v = trial.suggest_float(dim.key, low, high, step=float(step))
        return min(vals, key=lambda x: abs(x - v))  # the written number, not low + k*step's float noise
    log_scale = "log" in (sw.tags or set())
    if isinstance(sw.start, int) and isinstance(sw.end, int) and not isinstance(sw.start, bool):
        return trial.suggest_int(dim.key, sw.start, sw.end, log=log_scale)
    return trial.suggest_float(dim.key, float(sw.start), float(sw.end), log=log_scale)
