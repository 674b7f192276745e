"""archsearch's Hydra sweeper: Optuna (>= 5) ask/tell with budget rejection before launch,
pruning from inside the job, failure-tolerant and resumable studies, MLflow parent/child runs.

Select it with ``hydra/sweeper=archsearch`` (the sweep files in ``sweeps/`` do). This module
only declares the config and a thin class: Hydra imports every installed plugin at each start
of any Hydra app, so the implementation (optuna, mlflow, the whole of archsearch) lives in
:mod:`archsearch.search.sweeper` and is imported inside the class's methods, when a sweep runs.
"""

import sys
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper


@dataclass
class SamplerConf:
    name: str = "tpe"  # tpe | random | grid | cmaes | gp | nsgaii | qmc (Optuna's samplers)
    seed: int | None = 0  # each trial's sampler is seeded from (seed, its draw index)
    n_startup_trials: int = 8  # random trials before the model-based samplers (tpe, cmaes, gp) start
    multivariate: bool = False  # tpe only
    # any other keyword argument of the sampler's constructor, checked against it (e.g. for nsgaii:
    # {population_size: 20}; for cmaes: {sigma0: 0.5, restart_strategy: ipop})
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class PrunerConf:
    name: str = "hyperband"  # hyperband | median | none
    min_resource: int = 1  # epochs (hyperband)
    reduction_factor: int = 3  # hyperband
    n_startup_trials: int = 4  # median: trials before pruning starts
    n_warmup_steps: int = 1  # median: epochs before a trial can be pruned


@dataclass
class ArchsearchSweeperConf:
    _target_: str = "hydra_plugins.archsearch_sweeper.archsearch_sweeper.ArchsearchSweeper"
    study_name: str | None = None  # default: the sweep file's name, else "archsearch"
    # null: Optuna's journal file under mlruns/optuna/<study>.journal (safe for parallel
    # workers on one machine); or any Optuna RDB URL (postgresql://...) for many machines
    storage: str | None = None
    direction: Any = "maximize"  # one direction, or a list for multi-objective
    objectives: list[str] = field(default_factory=lambda: ["val_acc"])  # val_acc | params | macs | rf
    n_trials: int = 20  # trained trials in total (rejected candidates do not count)
    max_failures: int = 5  # failed trials in the study before the sweep stops
    max_rejections_in_a_row: int = 50  # budget-rejected candidates in a row before giving up
    # trials running at once; each in its own process once > 1, the next started as soon as one ends.
    # null: one per device slot (every GPU listed x trials_per_device; 1 on a CPU)
    n_jobs: int | None = None
    devices: Any = "auto"  # auto (every visible GPU; none on a CPU) | cpu | a list of GPU indices [0, 1]
    trials_per_device: int = 1  # several small trials may share one GPU
    # RDB storages (PostgreSQL): a running trial's worker beats every heartbeat_interval s; a trial
    # silent for grace_period s is failed by the next worker that looks, and its parameters re-queued
    heartbeat_interval: int = 30
    grace_period: int = 120
    sampler: SamplerConf = field(default_factory=SamplerConf)
    pruner: PrunerConf = field(default_factory=PrunerConf)
    params: dict[str, str] = field(default_factory=dict)  # search space, Hydra override grammar
    # trials to run first, each {searched key: value} (e.g. the shipped recipe as a baseline); keys
    # left out are sampled; queued once, when the study is created
    enqueue: list[Any] = field(default_factory=list)


ConfigStore.instance().store(group="hydra/sweeper", name="archsearch", node=ArchsearchSweeperConf,
                             provider="archsearch")


class ArchsearchSweeper(Sweeper):
    def __init__(self, **conf: Any) -> None:
        from archsearch.search.sweeper import SweeperImpl  # lazy: see the module's docstring

        self._impl = SweeperImpl(conf)

    def setup(self, *, hydra_context, task_function, config) -> None:
        self._impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        # lazy, as SweeperImpl: see the module's docstring
        from archsearch.errors import ConfigError, StudyError, SweepConfigError

        try:
            return self._impl.sweep(arguments)
        except (SweepConfigError, StudyError, ConfigError) as e:  # a mistake in the sweep's settings: one line
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
