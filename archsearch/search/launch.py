"""Launching a sweep trial's job: its config composed through Hydra (the budget gate reads it), the
job run in the sweeper's process or through Hydra's launcher, or written to a job folder for a
trial process of the :class:`~archsearch.search.pool.Pool` (which :meth:`TrialJobs.pool` plans),
and what a job returned turned into the result record a trial process writes.
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus, configure_log, run_job, setup_globals
from omegaconf import DictConfig, OmegaConf, open_dict

from archsearch.config.compose import check_choices
from archsearch.errors import Pruned, SweepConfigError
from archsearch.search.pool import Pool, plan_slots

__all__ = ["TrialJobs", "as_result", "write_job"]

log = logging.getLogger("archsearch.sweep")


class TrialJobs:
    """How this sweep runs its trials' jobs: Hydra's context, the task function, the app's config
    (with its hydra node) and the launcher Hydra configured."""

    def __init__(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def compose(self, overrides: list[str]) -> DictConfig:
        """A trial's config, as Hydra composes the job's."""
        sp = [str(x) for x in (self.config.hydra.get("searchpath") or [])]
        # a candidate's model file that Hydra's loader would choke on: one line, and a rejection
        check_choices([*overrides, *([f"hydra.searchpath=[{','.join(sp)}]"] if sp else [])], config_name=None)
        return self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))

    def launch(self, cfg: DictConfig, overrides: list[str], idx: int):
        """Run one trial's job -> Hydra's JobReturn. With Hydra's basic (in-process) launcher the
        job runs on the config the budget gate already composed: composing is the largest part
        of a trial's overhead, and this saves the second one. Any other launcher (submitit,
        joblib, ...) gets the overrides and composes on its side."""
        if not isinstance(self.launcher, BasicLauncher):
            return self.launcher.launch([overrides], initial_job_idx=idx)[0]
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info("trial %d: launching in this process: %s", idx, " ".join(overrides))
        with open_dict(cfg):
            cfg.hydra.job.id = idx
            cfg.hydra.job.num = idx
        ret = run_job(hydra_context=self.hydra_context, task_function=self.task_function, config=cfg,
                      job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return ret

    def pool(self, conf: DictConfig) -> Pool | None:
        """None: trials run one at a time in this process (Hydra's launcher). A Pool of trial processes
        when ``n_jobs`` > 1 or GPUs are listed, one per slot (see :func:`~archsearch.search.pool.plan_slots`).
        ``conf`` is hydra.sweeper's config."""
        devices = conf.get("devices", "auto")
        devices = list(devices) if OmegaConf.is_list(devices) else devices
        n_jobs = conf.get("n_jobs", 1)
        try:
            slots = plan_slots(n_jobs, devices, int(conf.get("trials_per_device", 1)))
        except ValueError as e:
            raise SweepConfigError(str(e)) from None
        listed = isinstance(devices, list) and bool(devices)
        if len(slots) == 1 and not listed:
            return None
        if not isinstance(self.launcher, BasicLauncher):
            raise SweepConfigError(f"hydra.sweeper.n_jobs: {len(slots)} concurrent trials run as local processes, "
                                   f"not through the {type(self.launcher).__name__}; set n_jobs=1 (the launcher "
                                   "runs the trials) or drop the launcher override")
        for s in slots:
            log.info("%s: cores %s", s.describe(), ",".join(map(str, s.cores)))
        return Pool(slots)


def as_result(ret) -> dict[str, Any]:
    """Hydra's JobReturn (a trial run in this process) -> the result record a trial process writes."""
    if ret.status == JobStatus.COMPLETED:
        return {"status": "COMPLETE", "value": ret.return_value}
    err = ret._return_value
    if isinstance(err, Pruned):
        return {"status": "PRUNED", "epoch": err.epoch, "value": err.value}
    _release(err)  # e.g. CUDA out of memory: free the failed trial's tensors first
    return {"status": "FAIL", "error": f"{type(err).__name__}: {err}"[:1000]}


def write_job(cfg: DictConfig, overrides: list[str], job_dir: Path) -> None:
    """A trial process's config, where Hydra keeps a job's: JOB_DIR/.hydra/config.yaml (as composed,
    without the hydra node) and overrides.yaml."""
    node = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"])
    (job_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(node, job_dir / ".hydra" / "config.yaml")  # unresolved: a model's knobs stay interpolations
    OmegaConf.save(OmegaConf.create(list(overrides)), job_dir / ".hydra" / "overrides.yaml")


def _release(err: BaseException) -> None:
    err.__traceback__ = None  # the traceback's frames hold the trial's model and batches
    gc.collect()
    try:
        # torch only here: the sweeper's process loads it only once a trial trained in it (a scored
        # sweep, or one whose trials run in processes of their own, never does)
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:
        pass
