"""Optuna's samplers, by the names users of Hydra's Optuna sweeper and of Optuna 5 know them, built
from ``hydra.sweeper.sampler``: ``name``, ``seed``, ``n_startup_trials`` and ``multivariate`` (where the
sampler takes them) and ``kwargs``, any other keyword argument of the sampler's constructor, checked
against it. A grid sampler's grid is the search space's choice and range dimensions.

Seeds: the sweeper builds a trial's sampler with a seed drawn from (the sweep's seed, the trial's
draw index) through NumPy's SeedSequence, so seeds S and S+1 give unrelated streams (a plain S + index
would make seed S+1's trial n seed S's trial n+1), and each trial of a study, whichever worker asks
it, draws from a stream of its own. The QMC and grid samplers keep the sweep's seed: a QMC sequence,
and the order in which a grid's points are tried, are one stream over the whole study.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import numpy as np
import optuna

from archsearch.errors import SweepConfigError
from archsearch.search.space import Dimension

__all__ = ["SAMPLERS", "GridSweepSampler", "make_sampler", "trial_seed"]


class GridSweepSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler in the sweeper's ask/tell loop: once every point is tried, Optuna's calls
    ``study.stop()``, which only works inside ``study.optimize``; here the sweeper stops instead
    (:meth:`is_exhausted`, read by its loop)."""

    def after_trial(self, study, trial, state, values) -> None:
        try:
            super().after_trial(study, trial, state, values)
        except RuntimeError:  # Study.stop outside optimize: the grid is done, the sweeper's loop sees it
            pass


SAMPLERS = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "grid": GridSweepSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "gp": optuna.samplers.GPSampler,
    "nsgaii": optuna.samplers.NSGAIISampler,
    "qmc": optuna.samplers.QMCSampler,
}
_SET_BY_SWEEPER = ("seed", "search_space")  # not kwargs: the sweeper sets them
# samplers whose seed fixes one sequence over the whole study (QMC's points, the grid's order): every
# trial's sampler keeps the sweep's seed
_ONE_STREAM = ("grid", "qmc")


def trial_seed(seed: int | None, draw: int) -> int | None:
    """The seed of the sampler that draws a study's ``draw``-th candidate."""
    if seed is None:
        return None
    return int(np.random.SeedSequence([int(seed), int(draw)]).generate_state(1)[0])


def make_sampler(conf: Mapping[str, Any], space: Mapping[str, Dimension] | None = None, draw: int = 0):
    """``hydra.sweeper.sampler`` -> an Optuna sampler for the study's ``draw``-th candidate."""
    name = str(conf.get("name", "tpe"))
    if name not in SAMPLERS:
        raise SweepConfigError(f"hydra.sweeper.sampler.name: unknown sampler {name!r}; "
                               f"choose one of {', '.join(SAMPLERS)}")
    cls = SAMPLERS[name]
    accepted = inspect.signature(cls).parameters
    kwargs = dict(conf.get("kwargs") or {})
    for key in kwargs:
        if key in _SET_BY_SWEEPER or key not in accepted:
            valid = [p for p in accepted if p not in _SET_BY_SWEEPER]
            raise SweepConfigError(f"hydra.sweeper.sampler.kwargs.{key}: not an argument of {name} "
                                   f"(optuna's {cls.__name__}); valid: {', '.join(valid) or 'none'}")
    if conf.get("multivariate") and "multivariate" not in accepted:
        raise SweepConfigError(f"hydra.sweeper.sampler.multivariate: only the tpe sampler has it, not {name}")
    for key in ("n_startup_trials", "multivariate"):
        if key in accepted and conf.get(key) is not None and key not in kwargs:
            kwargs[key] = conf[key]
    seed = conf.get("seed")
    kwargs["seed"] = (None if seed is None else int(seed)) if name in _ONE_STREAM else trial_seed(seed, draw)
    if name == "grid":
        kwargs["search_space"] = _grid(space or {})
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:  # a value the constructor refuses
        raise SweepConfigError(f"hydra.sweeper.sampler: {name}: {' '.join(str(e).split())}") from None


def _grid(space: Mapping[str, Dimension]) -> dict[str, list]:
    """The grid sampler's grid: every value of each choice and range dimension."""
    grid = {}
    for key, dim in space.items():
        values = dim.labels() or dim.values()
        if not values:
            raise SweepConfigError(f"{dim.where}: the grid sampler needs choice(...) or range(...) "
                                   "dimensions, not an interval; use another sampler or list the values")
        grid[key] = values
    if not grid:
        raise SweepConfigError("hydra.sweeper.sampler.name: grid needs a search space (hydra.sweeper.params)")
    return grid
