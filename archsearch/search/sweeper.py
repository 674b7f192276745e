"""The archsearch sweeper's implementation (imported only when the sweeper is used).

One loop per worker process, on Optuna's ask/tell API:

    ask -> suggest the search space -> compose the job config -> budget gate
      rejected: tell PRUNED (no epoch reported) + a positive "budget" constraint, an
                MLflow child run in state REJECTED; nothing is launched
      accepted: launch the job (it reports val accuracy each epoch to the storage and
                stops itself when the pruner says so) -> tell COMPLETE / PRUNED / FAIL;
                with objectives that need no training (params, macs, rf only): tell
                COMPLETE with the analysis's figures, an MLflow child run, nothing launched

until the study holds ``n_trials`` trained trials (COMPLETE + PRUNED + FAIL, whoever ran
them), ``max_failures`` failures, or ``max_rejections_in_a_row`` rejections in a row.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from archsearch.errors import SweepConfigError
from archsearch.search.space import DIRECTIONS, MEASURED, parse_space, suggest
from archsearch.search.study import TRAINED, override_value, split_sweep_args

log = logging.getLogger("archsearch.sweep")


_fmt = override_value


# ------------------------------------------------------------------ the sweeper
class SweeperImpl:
    def __init__(self, conf: dict[str, Any]) -> None:
        self.conf = OmegaConf.create({k: v for k, v in conf.items() if k != "_target_"})

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config = config
        self.task_function = task_function
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    # -------------------------------------------------------------- helpers
    def _directions(self) -> list[str]:
        d = self.conf.direction
        dirs = [str(x) for x in d] if isinstance(d, (list, tuple)) or OmegaConf.is_list(d) else [str(d)]
        objs = [str(o) for o in self.conf.objectives]
        for x in dirs:
            if x not in DIRECTIONS:
                raise SweepConfigError(f"hydra.sweeper.direction: unknown direction {x!r}; choose one of maximize, minimize")
        if len(objs) != len(dirs):
            if len(dirs) == 2 and objs == ["val_acc"]:
                objs = ["val_acc", "params"]
            else:
                raise SweepConfigError(f"hydra.sweeper.objectives: {len(objs)} objectives {objs} for {len(dirs)} directions")
        for o in objs:
            if o not in ("val_acc", *MEASURED):
                raise SweepConfigError(f"hydra.sweeper.objectives: unknown objective {o!r}; choose from val_acc, params, macs, rf")
        self.objectives = objs
        # nothing to train for: each accepted candidate is scored by the analysis alone (a proxy that
        # costs no training, e.g. the MACs, whose ranking `report proxies=` measures)
        self.scored = "" if "val_acc" in objs else ",".join(objs)
        return dirs

    def _compose(self, overrides: list[str]):
        from archsearch.config.compose import check_choices

        sp = [str(x) for x in (self.config.hydra.get("searchpath") or [])]
        # a candidate's model file that Hydra's loader would choke on: one line, and a rejection
        check_choices([*overrides, *([f"hydra.searchpath=[{','.join(sp)}]"] if sp else [])], config_name=None)
        return self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))

    def _launch(self, cfg, overrides: list[str], idx: int):
        """Run one trial's job -> Hydra's JobReturn. With Hydra's basic (in-process) launcher the
        job runs on the config the budget gate already composed: composing is the largest part
        of a trial's overhead, and this saves the second one. Any other launcher (submitit,
        joblib, ...) gets the overrides and composes on its side."""
        from hydra._internal.core_plugins.basic_launcher import BasicLauncher
        from hydra.core.utils import configure_log, run_job, setup_globals

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

    def _counts(self, study) -> dict[str, int]:
        from optuna.trial import TrialState

        c = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0, "REJECTED": 0, "INTERRUPTED": 0, "RUNNING": 0}
        for t in study.get_trials(deepcopy=False):
            if t.state == TrialState.RUNNING:
                c["RUNNING"] += 1
            elif t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
                st = t.user_attrs.get("state") or t.state.name
                c[st] = c.get(st, 0) + 1
        c["trained"] = sum(c[s] for s in TRAINED)
        return c

    def _recover(self, study) -> None:
        """Trials left RUNNING by a worker that died (SIGKILL, power cut): on this host found by their
        pid, on an RDB storage by their heartbeat (any host). Each is failed as INTERRUPTED (not
        counted), its parameters re-queued once and its MLflow run closed."""
        from optuna.trial import TrialState

        from archsearch.search.study import pid_alive

        self._fail_stale(study)
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            w = t.user_attrs.get("worker")
            if w is None or pid_alive(w) is not False:
                continue
            self._interrupted(study, t, f"worker {w} died during the trial")

    def _fail_stale(self, study) -> None:
        """RDB storages: RUNNING trials whose worker sent no heartbeat for grace_period seconds (killed,
        machine lost), from any host, are failed as INTERRUPTED and re-queued. Optuna's own
        fail_stale_trials fails them first and cannot annotate them after, so this reads the stale ids."""
        from optuna.exceptions import UpdateFinishedTrialError

        from archsearch.search.study import retrying

        interval = _heartbeat_interval(study)
        if not interval or time.time() - getattr(self, "_stale_checked", 0.0) < interval / 2:
            return
        self._stale_checked = time.time()
        for tid in retrying(self.storage._get_stale_trial_ids, study._study_id):
            t = study._storage.get_trial(tid)
            try:
                self._interrupted(study, t, f"no heartbeat from its worker {t.user_attrs.get('worker')}")
            except UpdateFinishedTrialError:
                pass  # another worker failed it first (and re-queued it)

    def _close_run(self, run_id: str | None, why: str, state: str | None = "INTERRUPTED") -> None:
        """An interrupted trial's MLflow run, if still RUNNING: closed as KILLED with the reason."""
        if not run_id or not self.tracker.enabled:
            return
        try:
            if self.tracker.client.get_run(run_id).info.status == "RUNNING":
                if state:
                    self.tracker.client.set_tag(run_id, "state", state)
                self.tracker.client.set_tag(run_id, "error", why[:4000])
                self.tracker.client.set_terminated(run_id, "KILLED")
        except Exception as e:  # the tracking server is down: the run stays as it was, the sweep goes on
            log.warning("could not close MLflow run %s: %s", run_id, e)

    def _parent_run(self, study) -> str | None:
        if not self.tracker.enabled:
            return None
        rid = study.user_attrs.get("mlflow_parent_run_id")
        if rid:
            try:
                run = self.tracker.client.get_run(rid)
            except Exception:
                run = None
            if run is not None:
                if run.info.status != "RUNNING":  # a stopped (or finished) sweep resumed: open again
                    self.tracker.client.update_run(rid, status="RUNNING")
                    if "error" in run.data.tags:  # (why it was stopped: no longer so)
                        self.tracker.client.delete_tag(rid, "error")
                return rid
        self.tracker.start(name=f"study {study.study_name}",
                           tags={"archsearch.study": study.study_name, "archsearch.role": "parent"})
        mine = self.tracker.run_id
        study.set_user_attr("mlflow_parent_run_id", mine)
        winner = study.user_attrs.get("mlflow_parent_run_id", mine)  # another worker may have won
        if winner != mine:
            self.tracker.client.delete_run(mine)
        return winner

    def _log_rejected(self, parent: str | None, trial, params: dict, analysis, reasons: list[str]) -> None:
        from archsearch.tracking import record_rejected

        p = dict(params)
        if analysis is not None:
            p.update({"model.params": analysis.params, "model.rf": analysis.rf, "model.macs": analysis.macs})
        rid = record_rejected(self.tracker, parent, f"trial {trial.number} (rejected)", reasons, p,
                              {"trial_number": trial.number, "study": self.study_name})
        if rid:
            trial.set_user_attr("mlflow_run_id", rid)

    # -------------------------------------------------------------- the loop
    def sweep(self, arguments: list[str]) -> Any:
        import warnings

        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        study = self._open_study(arguments)
        pool = self._pool()
        c = self._counts(study)
        log.info("study %s (%s): %d/%d trained trials so far, %d rejected; storage %s%s", self.study_name,
                 "/".join(d.name.lower() for d in study.directions), c["trained"], int(self.conf.n_trials),
                 c["REJECTED"], self.url, f"; {len(pool.free)} trials at a time" if pool else "")
        try:
            stop_reason = self._loop(study, pool)
        except (KeyboardInterrupt, SystemExit):  # Ctrl-C or SIGTERM: the study's run is not left RUNNING
            self._stopped(study, self.parent)
            raise
        return self._finish(study, self.parent, self.sweep_dir, stop_reason)

    def _stopped(self, study, parent: str | None) -> None:
        """The sweep was stopped: its MLflow parent run closed as KILLED (a resumed sweep reopens it),
        unless another worker still has a trial running in the study."""
        if not parent or not self.tracker.enabled:
            return
        try:
            c = self._counts(study)
            if c["RUNNING"]:
                return
            self.tracker.client.set_tag(parent, "summary", f"stopped: {c['trained']} trained trials, "
                                        f"{c['REJECTED']} rejected; resume with the same command")
            self._close_run(parent, "the sweep was stopped", state=None)
        except Exception as e:  # the storage or tracking server is down: nothing more to close
            log.warning("could not close the study's MLflow run %s: %s", parent, e)

    def _open_study(self, arguments: list[str]):
        """The study (created or resumed), its search space, the MLflow parent run, the sweep folder."""
        import optuna

        from archsearch.search.results import scored_by
        from archsearch.search.study import (
            forget_storage,
            make_pruner,
            make_sampler,
            open_storage,
            storage_url,
        )
        from archsearch.tracking import make_tracker

        base_dir = Path(os.environ.get("ARCHSEARCH_BASE", os.getcwd()))
        self.study_name = str(self.conf.study_name or self.config.hydra.runtime.choices.get("sweep") or "archsearch")
        directions = self._directions()
        params_conf = {str(k): str(v) for k, v in (self.conf.params or {}).items()}
        base, cli_space = split_sweep_args(arguments)
        self.space, fixed = parse_space({**params_conf, **cli_space})
        self.base = base + fixed
        for name in self.space:
            if self.scored and not name.startswith("model."):
                log.warning("hydra.sweeper.params.%s: does not change %s, which scores the trials without training: "
                            "its sampled values are noise to the sampler (fix it, e.g. %s=VALUE)", name, self.scored, name)
        self.url = url = storage_url(self.conf.storage, self.study_name, base_dir)
        max_epochs = int(self.config.trainer.epochs)
        pconf = OmegaConf.to_container(self.conf.pruner, resolve=True)
        if len(directions) > 1 and pconf.get("name") != "none":
            log.warning("multi-objective study: Optuna cannot prune it, so pruning is off")
            pconf = {"name": "none"}
        make_pruner(pconf, max_epochs)  # validate the pruner config now
        self.sconf = OmegaConf.to_container(self.conf.sampler, resolve=True)
        for attempt in range(5):  # workers starting together race to create the storage's tables
            try:
                self.storage = open_storage(url, heartbeat=(self.conf.get("heartbeat_interval", 30),
                                                            self.conf.get("grace_period", 120)))
                study = optuna.create_study(study_name=self.study_name, storage=self.storage, directions=directions,
                                            sampler=make_sampler(self.sconf), load_if_exists=True)
                break
            except Exception:
                forget_storage(url)
                if attempt == 4:
                    raise
                time.sleep(0.5 * (attempt + 1))
        if list(d.name.lower() for d in study.directions) != directions:
            raise SweepConfigError(f"hydra.sweeper.direction: study {self.study_name!r} in {url} already has "
                                   f"directions {[d.name.lower() for d in study.directions]}")
        was = scored_by(study)
        if was != self.scored and self._counts(study)["COMPLETE"]:  # a study's values are one kind of figure
            def what(scored: str) -> str:
                return f"scored by {scored} without training" if scored else "trained (val_acc)"
            raise SweepConfigError(f"hydra.sweeper.objectives: study {self.study_name!r} in {url} holds trials "
                                   f"{what(was)}, these objectives are {what(self.scored)}; keep its objectives "
                                   "or start a new study with hydra.sweeper.study_name=NEW")
        self._label(study, pconf, max_epochs)
        self.tracker = make_tracker(OmegaConf.to_container(self.config.tracking, resolve=True), base_dir)
        self._recover(study)
        self.parent = self._parent_run(study)
        self.sweep_dir = Path(self.config.hydra.sweep.dir)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, self.sweep_dir / "multirun.yaml")
        return study

    def _label(self, study, pconf: dict, max_epochs: int) -> None:
        import warnings

        with warnings.catch_warnings():  # dashboards show "val_acc", not "Objective 0" (experimental API)
            warnings.simplefilter("ignore")
            study.set_metric_names(list(self.objectives))
        if self.scored:  # report, retrain and export: the trials' values are not accuracies
            study.set_user_attr("archsearch.scored", self.scored)
        study.set_user_attr("archsearch.pruner", pconf)
        study.set_user_attr("archsearch.max_epochs", max_epochs)
        study.set_user_attr("archsearch.base_overrides", self.base)  # retrain/export rebuild a trial's architecture

    def _pool(self):
        """None: trials run one at a time in this process (Hydra's launcher). A Pool of trial processes
        when ``n_jobs`` > 1 or GPUs are listed, one per slot (see ``_pool.plan_slots``)."""
        from hydra._internal.core_plugins.basic_launcher import BasicLauncher

        from archsearch.search.pool import Pool, plan_slots

        devices = self.conf.get("devices", "auto")
        devices = list(devices) if OmegaConf.is_list(devices) else devices
        n_jobs = self.conf.get("n_jobs", 1)
        try:
            slots = plan_slots(n_jobs, devices, int(self.conf.get("trials_per_device", 1)))
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

    def _loop(self, study, pool) -> str | None:
        """Ask, gate and start trials until n_trials are trained (or a stop rule fires); with a pool,
        a new trial starts as soon as a slot frees up: no batch waits for its slowest trial."""
        from archsearch.search.pool import Pool

        n_trials, max_fail = int(self.conf.n_trials), int(self.conf.max_failures)
        max_rej = int(self.conf.max_rejections_in_a_row)
        rejected_in_a_row, stop_reason = 0, None
        try:
            while True:
                for r, result in (pool.reap() if pool else []):
                    r.extra["hb"].stop()
                    self._tell(study, r.extra["trial"], result, r.extra["analysis"], r.extra["values"],
                               time.time() - r.started)
                running = len(pool.running) if pool else 0
                self._fail_stale(study)
                c = self._counts(study)
                if stop_reason is None and c["FAIL"] >= max_fail:
                    stop_reason = f"stopped: {c['FAIL']} failed trials reached max_failures {max_fail}"
                room = pool.has_room() if pool else True
                if stop_reason is None and room and c["trained"] + c["RUNNING"] < n_trials:
                    cand = self._candidate(study)
                    if cand is None:  # rejected by the budget
                        rejected_in_a_row += 1
                        if rejected_in_a_row >= max_rej:
                            stop_reason = (f"stopped: {rejected_in_a_row} candidates in a row were rejected by the "
                                           "budget (max_rejections_in_a_row); widen the budget or narrow the search space")
                        continue
                    rejected_in_a_row = 0
                    if self.scored:
                        self._score(study, cand)
                    else:
                        self._start(study, cand, pool)
                    continue
                if not running:
                    if stop_reason is None and c["RUNNING"] and _heartbeat_interval(study):
                        # other workers' trials may yet come back as retries (their worker dies): stay for them
                        time.sleep(min(5.0, float(_heartbeat_interval(study))))
                        continue
                    return stop_reason
                pool.wait(0.5)
        finally:
            if isinstance(pool, Pool) and pool.running:
                for r in pool.stop_all():
                    r.extra["hb"].stop()
                    self._interrupted(study, r.extra["trial"], "the sweep was stopped during the trial")

    def _candidate(self, study):
        """Ask a trial, suggest its values, compose and gate its config -> (trial, values, overrides, cfg,
        report), or None when the budget rejected it (recorded, nothing launched)."""
        from archsearch.config.gate import verdict
        from archsearch.errors import SpecError
        from archsearch.search.study import draw_index, make_sampler, worker_id
        from archsearch.search.trial import TrialRef

        trial = study.ask()
        # distinct draws per trial, any worker; re-queued retries (fixed parameters) do not shift them
        study.sampler = make_sampler(self.sconf, seed_offset=draw_index(study, trial.number))
        trial.set_user_attr("worker", worker_id())
        values = self._suggest(study, trial)
        overrides = self.base + [f"{k}={_fmt(v)}" for k, v in values.items()]
        overrides += TrialRef(self.study_name, self.url, trial.number, trial._trial_id, self.parent).overrides(_fmt)
        analysis, reasons, cfg, amount = None, [], None, 0.0
        try:
            cfg = self._compose(overrides)
            _, analysis, violations = verdict(cfg)
            reasons = [v.message for v in violations]
            amount = sum(v.amount for v in violations)
        except SpecError as e:
            reasons, amount = [str(e)], 1.0
        except Exception as e:  # an override that cannot be composed
            reasons, amount = [" ".join(str(e).split())[:300]], 1.0
        if reasons:
            self._reject(study, trial, values, analysis, reasons, amount)
            return None
        trial.set_constraint("budget", 0.0)
        for k in MEASURED:
            trial.set_user_attr(f"model.{k}", getattr(analysis, k))
        return trial, values, overrides, cfg, analysis

    def _suggest(self, study, trial) -> dict[str, Any]:
        from optuna.trial import TrialState

        values: dict[str, Any] = {}
        try:
            for name, sw in self.space.items():
                values[name] = suggest(trial, name, sw)
        except ValueError as e:
            trial.set_user_attr("state", "INVALID")  # the sweep's settings, not a trained trial: not counted
            study.tell(trial, state=TrialState.FAIL)
            if isinstance(e, SweepConfigError):
                raise
            raise SweepConfigError(  # Optuna refuses a space other than the study's
                f"hydra.sweeper.params.{name}: study {self.study_name!r} in {self.url} already searches "
                f"{name} over a different space ({e}); keep the study's space or start a new study "
                "with hydra.sweeper.study_name=NEW") from None
        return values

    def _reject(self, study, trial, values, analysis, reasons: list[str], amount: float) -> None:
        from optuna.trial import TrialState

        trial.set_constraint("budget", amount)
        trial.set_user_attr("state", "REJECTED")
        trial.set_user_attr("reasons", reasons)
        if analysis is not None:
            for k in MEASURED:
                trial.set_user_attr(f"model.{k}", getattr(analysis, k))
        self._log_rejected(self.parent, trial, values, analysis, reasons)
        # PRUNED with no reported epoch and a positive constraint: TPE ranks it infeasible (it learns
        # the feasible region), while best trial, importance, history plots and dashboards, which
        # read COMPLETE trials, never see an untrained candidate as a result of 0
        study.tell(trial, state=TrialState.PRUNED)
        log.info("trial %d REJECTED (no job launched): %s", trial.number, "; ".join(reasons))

    def _score(self, study, cand) -> None:
        """A candidate of a study whose objectives need no training: COMPLETE with the analysis's
        figures, an MLflow child run (FINISHED) beside the trained studies' ones; no job launched."""
        from archsearch.tracking import record_scored

        trial, values, _, _, analysis = cand
        vals = [float(getattr(analysis, o)) for o in self.objectives]
        trial.set_user_attr("state", "COMPLETE")
        trial.set_user_attr("scored", self.scored)
        rid = record_scored(self.tracker, self.parent, f"trial {trial.number} (scored, not trained)",
                            {**values, **{f"model.{k}": getattr(analysis, k) for k in MEASURED}},
                            {f"model.{k}": getattr(analysis, k) for k in MEASURED},
                            {"trial_number": trial.number, "study": self.study_name, "scored": self.scored})
        if rid:
            trial.set_user_attr("mlflow_run_id", rid)
        study.tell(trial, vals)
        log.info("trial %d COMPLETE (scored, not trained): %s %s", trial.number,
                 ", ".join(f"{o}={v:,.0f}" for o, v in zip(self.objectives, vals)), values)

    def _start(self, study, cand, pool) -> None:
        """Run the trial here (no pool: wait for it) or start it on a free slot of the pool."""
        trial, values, overrides, cfg, analysis = cand
        hb = _Heartbeat(self.storage, trial._trial_id)
        if pool is None:
            t0 = time.time()
            try:
                try:
                    result = _as_result(self._launch(cfg, overrides, trial.number))
                finally:
                    hb.stop()
            except (KeyboardInterrupt, SystemExit):  # Ctrl-C or SIGTERM (SystemExit 143): not the trial's fault
                try:
                    self._interrupted(study, trial, "the sweep was stopped during the trial")
                except Exception as e:  # (the storage gone too: the next sweep's start-up recovers the trial)
                    log.warning("trial %d: could not be marked INTERRUPTED: %s", trial.number, e)
                raise
            self._tell(study, trial, result, analysis, values, time.time() - t0)
            return
        job_dir = (self.sweep_dir / str(trial.number)).resolve()
        _write_job(cfg, overrides, job_dir)
        try:
            r = pool.start(trial.number, job_dir, trial=trial, analysis=analysis, values=values, hb=hb)
        except BaseException:
            hb.stop()
            raise
        trial.set_user_attr("slot", r.slot.describe())
        log.info("trial %d: started on %s (pid %d): %s", trial.number, r.slot.describe(), r.proc.pid,
                 " ".join(overrides[:len(self.base) + len(values)]))

    def _tell(self, study, trial, result: dict[str, Any], analysis, values, dur: float) -> None:
        from optuna.exceptions import UpdateFinishedTrialError

        from archsearch.search.study import retrying

        try:
            retrying(self._tell_now, study, trial, result, analysis, values, dur)  # outlives a database restart
        except UpdateFinishedTrialError:  # its heartbeats did not arrive in time: another worker re-queued it
            log.warning("trial %d: failed by another worker meanwhile (no heartbeat for grace_period); this "
                        "result (%s) is dropped, the re-queued copy runs instead", trial.number, result.get("status"))

    def _tell_now(self, study, trial, result: dict[str, Any], analysis, values, dur: float) -> None:
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        if study._storage.get_trial(trial._trial_id).state.is_finished():
            raise UpdateFinishedTrialError(f"trial {trial.number} already finished")
        status = result.get("status")
        if status == "COMPLETE":
            val = result.get("value")
            if val is None or (isinstance(val, float) and not math.isfinite(val)):
                result = {"status": "FAIL", "error": f"job returned {val!r}"}
            else:
                trial.set_user_attr("state", "COMPLETE")
                vals = [float(val) if o == "val_acc" else float(getattr(analysis, o)) for o in self.objectives]
                study.tell(trial, vals)
                log.info("trial %d COMPLETE: %s in %.0fs %s", trial.number,
                         ", ".join(f"{o}={v:.4g}" for o, v in zip(self.objectives, vals)), dur, values)
                return
        if result["status"] == "PRUNED":
            trial.set_user_attr("state", "PRUNED")
            trial.set_user_attr("epochs", result["epoch"])
            study.tell(trial, state=TrialState.PRUNED)
            log.info("trial %d PRUNED after epoch %d (val_acc %.4f)", trial.number, result["epoch"], result["value"])
        elif result["status"] == "INTERRUPTED":
            self._interrupted(study, trial, result["error"])
        else:
            trial.set_user_attr("state", "FAIL")
            trial.set_user_attr("error", result["error"])
            study.tell(trial, state=TrialState.FAIL)
            log.warning("trial %d FAIL: %s", trial.number, result["error"])

    def _interrupted(self, study, trial, why: str) -> None:
        """A trial whose process was stopped or killed (not the trial's fault): failed as INTERRUPTED (not
        counted) and its parameters re-queued once, as for a worker found dead at start-up."""
        from optuna.trial import TrialState

        frozen = study._storage.get_trial(trial._trial_id)
        study._storage.set_trial_user_attr(trial._trial_id, "state", "INTERRUPTED")
        study._storage.set_trial_user_attr(trial._trial_id, "error", why)
        # the storage's own transition: raises UpdateFinishedTrialError if another worker failed it first
        study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        if frozen.params and not frozen.user_attrs.get("retry_of"):
            study.enqueue_trial(frozen.params, user_attrs={"retry_of": frozen.number}, skip_if_exists=False)
        self._close_run(frozen.user_attrs.get("mlflow_run_id"), why)
        log.warning("trial %d INTERRUPTED (%s); re-queued", frozen.number, why)

    def _finish(self, study, parent, sweep_dir: Path, stop_reason: str | None):
        from archsearch.search.leaderboard import leaderboard, summary_line, write_outputs

        c = self._counts(study)
        df = leaderboard(study, self.tracker if self.tracker.enabled else None, parent)
        files = write_outputs(df, sweep_dir, study.study_name, budget_params=self._budget_params())
        line = summary_line(study, df)
        if parent and self.tracker.enabled:
            t = self.tracker.for_run(parent)
            ok = df[df.state == "COMPLETE"] if len(df) else df
            metrics = {"n_complete": c["COMPLETE"], "n_pruned": c["PRUNED"], "n_failed": c["FAIL"],
                       "n_rejected": c["REJECTED"]}
            if len(ok) and len(study.directions) == 1:
                best = ok.sort_values("val_acc", ascending=False).iloc[0]
                metrics["best_val_acc"] = float(best["val_acc"])
                t.set_tags({"best_trial": int(best["trial"]), "best_params": best.get("sampled", "")})
            t.log_metrics(metrics)
            for f in files:
                t.log_artifact(f)
            t.set_tags({"summary": line})
            t.end("FINISHED")
        print(line, file=sys.stderr)
        if stop_reason:
            print(stop_reason, file=sys.stderr)
        return df

    def _budget_params(self) -> int | None:
        try:
            return self.config.budget.max_params
        except Exception:
            return None


def _heartbeat_interval(study) -> int | None:
    """Seconds between heartbeats of an RDB storage with heartbeats on (the study's storage is Optuna's
    cache around it); None for the journal file."""
    get = getattr(study._storage, "get_heartbeat_interval", None)
    return get() if get else None


def _as_result(ret) -> dict[str, Any]:
    """Hydra's JobReturn (a trial run in this process) -> the result record a trial process writes."""
    from hydra.core.utils import JobStatus

    from archsearch.errors import Pruned

    if ret.status == JobStatus.COMPLETED:
        return {"status": "COMPLETE", "value": ret.return_value}
    err = ret._return_value
    if isinstance(err, Pruned):
        return {"status": "PRUNED", "epoch": err.epoch, "value": err.value}
    _release(err)  # e.g. CUDA out of memory: free the failed trial's tensors first
    return {"status": "FAIL", "error": f"{type(err).__name__}: {err}"[:1000]}


def _write_job(cfg, overrides: list[str], job_dir: Path) -> None:
    """A trial process's config, where Hydra keeps a job's: JOB_DIR/.hydra/config.yaml (as composed,
    without the hydra node) and overrides.yaml."""
    node = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"])
    (job_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(node, job_dir / ".hydra" / "config.yaml")  # unresolved: a model's knobs stay interpolations
    OmegaConf.save(OmegaConf.create(list(overrides)), job_dir / ".hydra" / "overrides.yaml")


def _release(err: BaseException) -> None:
    import gc

    err.__traceback__ = None  # the traceback's frames hold the trial's model and batches
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:
        pass


class _Heartbeat:
    """RDB storages: record a heartbeat while the job runs so another machine can fail
    (and retry) the trial if this worker dies. No-op for the journal file."""

    def __init__(self, storage, trial_id: int):
        import threading

        self._stop = threading.Event()
        self._thread = None
        if hasattr(storage, "record_heartbeat") and getattr(storage, "heartbeat_interval", None):
            interval = float(storage.heartbeat_interval)  # the storage's, which grace_period is set against
            def beat():
                while not self._stop.wait(0):
                    try:
                        storage.record_heartbeat(trial_id)
                    except Exception:
                        pass
                    self._stop.wait(interval)
            self._thread = threading.Thread(target=beat, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
