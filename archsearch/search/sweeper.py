"""The archsearch sweeper's ask/tell loop (the Hydra plugin ``hydra_plugins.archsearch_sweeper``
imports this module only when a sweep runs).

One loop per worker process, on Optuna's ask/tell API:

    ask -> suggest the search space -> the config the budget gate reads -> budget gate
      rejected: tell PRUNED (no epoch reported) + a positive "budget" constraint, an
                MLflow child run in state REJECTED; nothing is launched
      accepted: launch the job (it reports val accuracy each epoch to the storage and
                stops itself when the pruner says so) -> tell COMPLETE / PRUNED / FAIL;
                with objectives that need no training (params, macs, rf only): tell
                COMPLETE with the analysis's figures, an MLflow child run, nothing launched

until the study holds ``n_trials`` trained trials (COMPLETE + PRUNED + FAIL, whoever ran
them), ``max_failures`` failures, or ``max_rejections_in_a_row`` rejections in a row.

The study is opened by :mod:`~archsearch.search.sweep_study`, the jobs launched by
:mod:`~archsearch.search.launch`, interrupted trials recovered by :mod:`~archsearch.search.recovery`.
"""

from __future__ import annotations

import logging
import math
import sys
import time
import warnings
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from archsearch.config.compose import spec_from_cfg
from archsearch.config.gate import verdict
from archsearch.errors import SpecError, SweepConfigError, first_line
from archsearch.search.gate_config import GateConfigs
from archsearch.search.launch import TrialJobs, as_result, write_job
from archsearch.search.leaderboard import leaderboard, summary_line, write_outputs
from archsearch.search.pool import Pool
from archsearch.search.recovery import Heartbeat, heartbeat_interval
from archsearch.search.samplers import GridSweepSampler, make_sampler
from archsearch.search.space import MEASURED, TIMED, suggest
from archsearch.search.study import count_states, draw_index, override_value, retrying, worker_id
from archsearch.search.sweep_study import SweepStudy, open_sweep_study
from archsearch.search.trial import TrialRef
from archsearch.tracking import record_rejected, record_scored, trial_run_name
from archsearch.training.train_speed import train_speed

__all__ = ["SweeperImpl", "set_budget_constraint"]

log = logging.getLogger("archsearch.sweep")


def _figure(v: float) -> str:
    """An objective for the log: counts with separators (macs=44,912,640), times to 2 places (ms_per_image=5.12),
    as the report shows them."""
    return f"{v:,.0f}" if float(v).is_integer() else f"{v:,.2f}"


def set_budget_constraint(trial, amount: float) -> None:
    """The budget constraint (> 0: infeasible, by how much) where Optuna's samplers read it
    (``set_constraint``) and where optuna-dashboard reads it (the system attribute ``constraints``,
    a list), so its plots and trial list show a rejected candidate as infeasible."""
    trial.set_constraint("budget", amount)
    trial.storage.set_trial_system_attr(trial._trial_id, "constraints", [float(amount)])


class SweeperImpl:
    """What the Hydra plugin's sweeper does: ``setup`` by Hydra, then ``sweep`` the study."""

    def __init__(self, conf: dict[str, Any]) -> None:
        self.conf = OmegaConf.create({k: v for k, v in conf.items() if k != "_target_"})  # hydra.sweeper
        self.jobs: TrialJobs | None = None  # set by setup()
        self.sweep_study: SweepStudy | None = None  # set by sweep(), once the study is open

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.jobs = TrialJobs(hydra_context=hydra_context, task_function=task_function, config=config)

    # -------------------------------------------------------------- the loop
    def sweep(self, arguments: list[str]) -> Any:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        self.sweep_study = s = open_sweep_study(self.conf, self.jobs.config, arguments)
        self.gate_configs = GateConfigs(self.jobs.compose, s.base)
        pool = self.jobs.pool(self.conf)
        c = count_states(s.study)
        log.info("study %s (%s): %d/%d trained trials so far, %d rejected; storage %s%s%s", s.name,
                 "/".join(d.name.lower() for d in s.study.directions), c["trained"], int(self.conf.n_trials),
                 c["REJECTED"], s.url, f"; {len(pool.free)} trials at a time" if pool else "",
                 f"; fixed by the command line, not searched: {' '.join(s.pinned)}" if s.pinned else "")
        try:
            stop_reason = self._loop(pool)
        except (KeyboardInterrupt, SystemExit):  # Ctrl-C or SIGTERM: the study's run is not left RUNNING
            s.recovery.sweep_stopped(s.parent)
            raise
        return self._finish(stop_reason)

    def _loop(self, pool: Pool | None) -> str | None:
        """Ask, gate and start trials until n_trials are trained (or a stop rule fires); with a pool,
        a new trial starts as soon as a slot frees up: no batch waits for its slowest trial."""
        s = self.sweep_study
        n_trials, max_fail = int(self.conf.n_trials), int(self.conf.max_failures)
        max_rej = int(self.conf.max_rejections_in_a_row)
        rejected_in_a_row, stop_reason = 0, None
        try:
            while True:
                for r, result in (pool.reap() if pool else []):
                    r.extra["hb"].stop()
                    self._tell(r.extra["trial"], result, r.extra["analysis"], r.extra["values"],
                               time.time() - r.started)
                running = len(pool.running) if pool else 0
                s.recovery.fail_stale()
                c = count_states(s.study)
                if stop_reason is None and c["FAIL"] >= max_fail:
                    stop_reason = f"stopped: {c['FAIL']} failed trials reached max_failures {max_fail}"
                if stop_reason is None and isinstance(s.study.sampler, GridSweepSampler) \
                        and s.study.sampler.is_exhausted(s.study):
                    stop_reason = "stopped: every point of the grid was tried (hydra.sweeper.sampler.name=grid)"
                room = pool.has_room() if pool else True
                if stop_reason is None and room and c["trained"] + c["RUNNING"] < n_trials:
                    cand = self._candidate()
                    if cand is None:  # rejected by the budget
                        rejected_in_a_row += 1
                        if rejected_in_a_row >= max_rej:
                            stop_reason = (f"stopped: {rejected_in_a_row} candidates in a row were rejected by the "
                                           "budget (max_rejections_in_a_row); widen the budget or narrow the search space")
                        continue
                    rejected_in_a_row = 0
                    if s.scored:
                        self._score(cand)
                    else:
                        self._start(cand, pool)
                    continue
                if not running:
                    if stop_reason is None and c["RUNNING"] and heartbeat_interval(s.study):
                        # other workers' trials may yet come back as retries (their worker dies): stay for them
                        time.sleep(min(5.0, float(heartbeat_interval(s.study))))
                        continue
                    return stop_reason
                pool.wait(0.5)
        finally:
            if isinstance(pool, Pool) and pool.running:
                for r in pool.stop_all():
                    r.extra["hb"].stop()
                    s.recovery.interrupted(r.extra["trial"], "the sweep was stopped during the trial")

    # -------------------------------------------------------------- one candidate
    def _candidate(self):
        """Ask a trial, suggest its values, compose and gate its config -> (trial, values, overrides, cfg,
        analysis), or None when the budget rejected it (recorded, nothing launched)."""
        s = self.sweep_study
        trial = s.study.ask()
        # distinct draws per trial, any worker; re-queued retries (fixed parameters) do not shift them
        s.study.sampler = make_sampler(s.sampler, s.space, draw=draw_index(s.study, trial.number))
        trial.set_user_attr("worker", worker_id())
        values = self._suggest(trial)
        sampled = [s.space[k].override(v) for k, v in values.items()]
        trial.set_user_attr("overrides", sampled)  # what the job receives: retrain and export rebuild it
        overrides = s.base + sampled
        ref = TrialRef(study_name=s.name, storage=s.url, number=trial.number, trial_id=trial._trial_id,
                       parent_run_id=s.parent)
        overrides += ref.overrides(override_value)
        analysis, reasons, cfg, amount = None, [], None, 0.0
        try:
            # the gate reads the base config with the sampled values applied (no Hydra composition, when
            # they are plain values); a candidate that trains gets Hydra's own composition for its job
            fast = self.gate_configs.get(sampled)
            cfg = fast if fast is not None else self.jobs.compose(overrides)
            _, analysis, violations = verdict(cfg)
            reasons = [v.message for v in violations]
            amount = sum(v.amount for v in violations)
            if fast is not None and not reasons and (not s.scored or set(s.objectives) & set(TIMED)):
                cfg = self.jobs.compose(overrides)  # the job's config, or the trainer section a timing reads
        except SpecError as e:
            reasons, amount = [str(e)], 1.0
        except Exception as e:  # an override that cannot be composed
            reasons, amount = [" ".join(str(e).split())[:300]], 1.0
        if reasons:
            self._reject(trial, values, analysis, reasons, amount)
            return None
        set_budget_constraint(trial, 0.0)
        for k in MEASURED:
            trial.set_user_attr(f"model.{k}", getattr(analysis, k))
        return trial, values, overrides, cfg, analysis

    def _suggest(self, trial) -> dict[str, Any]:
        s = self.sweep_study
        values: dict[str, Any] = {}
        try:
            for name, dim in s.space.items():
                values[name] = suggest(trial, dim)
        except ValueError as e:
            trial.set_user_attr("state", "INVALID")  # the sweep's settings, not a trained trial: not counted
            s.study.tell(trial, state=TrialState.FAIL)
            if isinstance(e, SweepConfigError):
                raise
            if any(name in t.params for t in s.study.get_trials(deepcopy=False)):
                raise SweepConfigError(  # Optuna refuses a space other than the study's
                    f"hydra.sweeper.params.{name}: study {s.name!r} in {s.url} already searches "
                    f"{name} over a different space ({e}); keep the study's space or start a new study "
                    "with hydra.sweeper.study_name=NEW") from None
            raise SweepConfigError(f"hydra.sweeper.params.{name}: optuna refuses this distribution: {e}") from None
        return values

    def _reject(self, trial, values, analysis, reasons: list[str], amount: float) -> None:
        s = self.sweep_study
        set_budget_constraint(trial, amount)
        trial.set_user_attr("state", "REJECTED")
        trial.set_user_attr("reasons", reasons)
        if analysis is not None:
            for k in MEASURED:
                trial.set_user_attr(f"model.{k}", getattr(analysis, k))
        p = dict(values)
        if analysis is not None:
            p.update({"model.params": analysis.params, "model.rf": analysis.rf, "model.macs": analysis.macs})
        rid = record_rejected(s.tracker, s.parent, trial_run_name(trial.number, "REJECTED"), reasons, p,
                              {"trial_number": trial.number, "study": s.name}, analysis=analysis)
        if rid:
            trial.set_user_attr("mlflow_run_id", rid)
        # PRUNED with no reported epoch and a positive constraint: TPE ranks it infeasible (it learns
        # the feasible region), while best trial, importance, history plots and dashboards, which
        # read COMPLETE trials, never see an untrained candidate as a result of 0
        s.study.tell(trial, state=TrialState.PRUNED)
        log.info("trial %d REJECTED (no job launched): %s", trial.number, "; ".join(reasons))

    def _score(self, cand) -> None:
        """A candidate of a study whose objectives need no training: COMPLETE with the analysis's
        figures, an MLflow child run (FINISHED) beside the trained studies' ones; no job launched."""
        s = self.sweep_study
        trial, values, _, cfg, analysis = cand
        figures = {f"model.{k}": getattr(analysis, k) for k in MEASURED}
        tags = {"trial_number": trial.number, "study": s.name, "scored": s.scored}
        if set(s.objectives) & set(TIMED):
            try:
                speed = train_speed(spec_from_cfg(cfg.model), cfg.trainer, int(cfg.trainer.batch_size))
            except Exception as e:  # noqa: BLE001 - this candidate's step cannot be timed here: its verdict
                why = first_line(e)
                trial.set_user_attr("state", "FAIL")
                trial.set_user_attr("error", f"timing its training step: {why}")
                s.study.tell(trial, state=TrialState.FAIL)
                log.warning("trial %d FAIL: timing its training step: %s", trial.number, why)
                return
            figures["model.ms_per_image"] = speed.ms_per_image
            trial.set_user_attr("model.ms_per_image", speed.ms_per_image)
            trial.set_user_attr("timed_in", speed.precision)
            tags["timed_in"] = speed.precision
            if speed.busy:  # the figure is used (the sampler needs one) and marked
                trial.set_user_attr("timing_note", speed.busy)
                log.warning("trial %d: ms_per_image %.2f may be off: %s", trial.number, speed.ms_per_image, speed.busy)
        vals = [float(figures[f"model.{o}"]) for o in s.objectives]
        trial.set_user_attr("state", "COMPLETE")
        trial.set_user_attr("scored", s.scored)
        rid = record_scored(s.tracker, s.parent, trial_run_name(trial.number, "SCORED", params=analysis.params),
                            {**values, **figures}, figures, tags, analysis=analysis)
        if rid:
            trial.set_user_attr("mlflow_run_id", rid)
        s.study.tell(trial, vals)
        log.info("trial %d COMPLETE (scored, not trained): %s %s", trial.number,
                 ", ".join(f"{o}={_figure(v)}" for o, v in zip(s.objectives, vals)), values)

    def _start(self, cand, pool: Pool | None) -> None:
        """Run the trial here (no pool: wait for it) or start it on a free slot of the pool."""
        s = self.sweep_study
        trial, values, overrides, cfg, analysis = cand
        hb = Heartbeat(s.storage, trial._trial_id)
        if pool is None:
            t0 = time.time()
            try:
                try:
                    result = as_result(self.jobs.launch(cfg, overrides, trial.number))
                finally:
                    hb.stop()
            except (KeyboardInterrupt, SystemExit):  # Ctrl-C or SIGTERM (SystemExit 143): not the trial's fault
                try:
                    s.recovery.interrupted(trial, "the sweep was stopped during the trial")
                except Exception as e:  # (the storage gone too: the next sweep's start-up recovers the trial)
                    log.warning("trial %d: could not be marked INTERRUPTED: %s", trial.number, e)
                raise
            self._tell(trial, result, analysis, values, time.time() - t0)
            return
        job_dir = (s.sweep_dir / str(trial.number)).resolve()
        write_job(cfg, overrides, job_dir)
        try:
            r = pool.start(trial.number, job_dir, trial=trial, analysis=analysis, values=values, hb=hb)
        except BaseException:
            hb.stop()
            raise
        trial.set_user_attr("slot", r.slot.describe())
        log.info("trial %d: started on %s (pid %d): %s", trial.number, r.slot.describe(), r.proc.pid,
                 " ".join(overrides[:len(s.base) + len(values)]))

    # -------------------------------------------------------------- its result
    def _tell(self, trial, result: dict[str, Any], analysis, values, dur: float) -> None:
        try:
            retrying(self._tell_now, trial, result, analysis, values, dur)  # outlives a database restart
        except UpdateFinishedTrialError:  # its heartbeats did not arrive in time: another worker re-queued it
            log.warning("trial %d: failed by another worker meanwhile (no heartbeat for grace_period); this "
                        "result (%s) is dropped, the re-queued copy runs instead", trial.number, result.get("status"))

    def _tell_now(self, trial, result: dict[str, Any], analysis, values, dur: float) -> None:
        s = self.sweep_study
        if s.study._storage.get_trial(trial._trial_id).state.is_finished():
            raise UpdateFinishedTrialError(f"trial {trial.number} already finished")
        status = result.get("status")
        if status == "COMPLETE":
            val = result.get("value")
            if val is None or (isinstance(val, float) and not math.isfinite(val)):
                result = {"status": "FAIL", "error": f"job returned {val!r}"}
            else:
                trial.set_user_attr("state", "COMPLETE")
                vals = [float(val) if o == "val_acc" else float(getattr(analysis, o)) for o in s.objectives]
                s.study.tell(trial, vals)
                log.info("trial %d COMPLETE: %s in %.0fs %s", trial.number,
                         ", ".join(f"{o}={v:.4g}" for o, v in zip(s.objectives, vals)), dur, values)
                return
        if result["status"] == "PRUNED":
            trial.set_user_attr("state", "PRUNED")
            trial.set_user_attr("epochs", result["epoch"])
            s.study.tell(trial, state=TrialState.PRUNED)
            log.info("trial %d PRUNED after epoch %d (val_acc %.4f)", trial.number, result["epoch"], result["value"])
        elif result["status"] == "INTERRUPTED":
            s.recovery.interrupted(trial, result["error"])
        else:
            trial.set_user_attr("state", "FAIL")
            trial.set_user_attr("error", result["error"])
            s.study.tell(trial, state=TrialState.FAIL)
            log.warning("trial %d FAIL: %s", trial.number, result["error"])

    # -------------------------------------------------------------- the end
    def _finish(self, stop_reason: str | None):
        """The leaderboard and its files in the sweep folder, the figures on the study's MLflow run
        (closed FINISHED), the summary line on stderr."""
        s = self.sweep_study
        c = count_states(s.study)
        df = leaderboard(s.study, s.tracker.child_metrics(s.parent) if s.tracker.enabled and s.parent else None)
        files = write_outputs(df, s.sweep_dir, s.study.study_name, budget_params=self._budget_params())
        line = summary_line(s.study, df)
        if s.parent and s.tracker.enabled:
            t = s.tracker.for_run(s.parent)
            ok = df[df.state == "COMPLETE"] if len(df) else df
            metrics = {"n_complete": c["COMPLETE"], "n_pruned": c["PRUNED"], "n_failed": c["FAIL"],
                       "n_rejected": c["REJECTED"]}
            if len(ok) and len(s.study.directions) == 1:
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
            return self.jobs.config.budget.max_params
        except Exception:
            return None
