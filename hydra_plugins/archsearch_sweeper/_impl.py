"""The archsearch sweeper's implementation (imported only when the sweeper is used).

One loop per worker process, on Optuna's ask/tell API:

    ask -> suggest the search space -> compose the job config -> budget gate
      rejected: tell COMPLETE with the worst value + a positive "budget" constraint, an
                MLflow child run in state REJECTED; nothing is launched
      accepted: launch the job (it reports val accuracy each epoch to the storage and
                stops itself when the pruner says so) -> tell COMPLETE / PRUNED / FAIL

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

from archsearch.study import TRAINED, override_value

log = logging.getLogger("archsearch.sweep")

MEASURED = ("params", "macs", "rf")  # objectives taken from the analysis, not the job
DIRECTIONS = ("maximize", "minimize")


class SweepConfigError(ValueError):
    pass


# ------------------------------------------------------------------ search space
def parse_space(params: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """Hydra override grammar -> ({name: sweep object}, [fixed overrides])."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

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


def _values(sweep) -> list:
    from hydra.core.override_parser.types import ChoiceSweep, RangeSweep

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
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

    if isinstance(sweep, ChoiceSweep):
        choices = [c if isinstance(c, (str, int, float, bool)) or c is None else str(c) for c in sweep.list]
        return trial.suggest_categorical(name, choices)
    if isinstance(sweep, RangeSweep):
        vals = _values(sweep)
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
        return dirs

    def _compose(self, overrides: list[str]):
        from archsearch.config import check_choices

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

    def _worst(self, direction: str, name: str, report) -> float:
        if name in MEASURED and report is not None:
            return float(getattr(report, name))
        if name == "val_acc":
            return 0.0 if direction == "maximize" else 1.0
        return 1e12 if direction == "minimize" else 0.0

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
        """Trials left RUNNING by a worker that died (SIGKILL, power cut) on this host are
        marked failed (state INTERRUPTED, not counted) and their parameters re-queued."""
        import warnings

        import optuna
        from optuna.trial import TrialState

        from archsearch.study import pid_alive

        if getattr(study._storage, "heartbeat_interval", None):  # RDB: heartbeats stopped elsewhere
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                optuna.storages.fail_stale_trials(study)
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            w = t.user_attrs.get("worker")
            if w is None or pid_alive(w) is not False:
                continue
            study._storage.set_trial_user_attr(t._trial_id, "state", "INTERRUPTED")
            study.tell(t.number, state=TrialState.FAIL)
            if t.params and not t.user_attrs.get("retry_of"):
                study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
            run_id = t.user_attrs.get("mlflow_run_id")
            if run_id and self.tracker.enabled:
                try:
                    self.tracker.client.set_tag(run_id, "state", "FAIL")
                    self.tracker.client.set_tag(run_id, "error", f"worker {w} died during the trial")
                    self.tracker.client.set_terminated(run_id, "FAILED")
                except Exception:
                    pass
            log.warning("trial %d: its worker %s died; marked failed and re-queued", t.number, w)

    def _parent_run(self, study) -> str | None:
        if not self.tracker.enabled:
            return None
        rid = study.user_attrs.get("mlflow_parent_run_id")
        if rid:
            try:
                self.tracker.client.get_run(rid)
                return rid
            except Exception:
                pass
        self.tracker.start(name=f"study {study.study_name}",
                           tags={"archsearch.study": study.study_name, "archsearch.role": "parent"})
        mine = self.tracker.run_id
        study.set_user_attr("mlflow_parent_run_id", mine)
        winner = study.user_attrs.get("mlflow_parent_run_id", mine)  # another worker may have won
        if winner != mine:
            self.tracker.client.delete_run(mine)
        return winner

    def _log_rejected(self, parent: str | None, trial, params: dict, report, reasons: list[str]) -> None:
        from archsearch.tracking import record_rejected

        p = dict(params)
        if report is not None:
            p.update({"model.params": report.params, "model.rf": report.rf, "model.macs": report.macs})
        rid = record_rejected(self.tracker, parent, f"trial {trial.number} (rejected)", reasons, p,
                              {"trial_number": trial.number, "study": self.study_name})
        if rid:
            trial.set_user_attr("mlflow_run_id", rid)

    # -------------------------------------------------------------- the loop
    def sweep(self, arguments: list[str]) -> Any:
        import warnings

        import optuna
        from hydra.core.utils import JobStatus
        from optuna.trial import TrialState

        from archsearch.gate import BudgetRejected, gate
        from archsearch.spec import SpecError
        from archsearch.study import (
            forget_storage,
            make_pruner,
            make_sampler,
            open_storage,
            storage_url,
            worker_id,
        )
        from archsearch.tracking import make_tracker
        from archsearch.trial import Pruned, TrialRef

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        base_dir = Path(os.environ.get("ARCHSEARCH_BASE", os.getcwd()))
        choices = self.config.hydra.runtime.choices
        self.study_name = str(self.conf.study_name or choices.get("sweep") or "archsearch")
        directions = self._directions()
        params_conf = {str(k): str(v) for k, v in (self.conf.params or {}).items()}
        base, cli_space = [], {}
        for a in arguments:
            k, _, v = a.partition("=")
            if any(v.startswith(f) for f in ("choice(", "range(", "interval(", "tag(")) or ("," in v and "[" not in v and "{" not in v):
                cli_space[k.lstrip("+")] = v if not ("," in v and "(" not in v) else f"choice({v})"
            else:
                base.append(a)
        space, fixed = parse_space({**params_conf, **cli_space})
        base += fixed
        url = storage_url(self.conf.storage, self.study_name, base_dir)
        max_epochs = int(self.config.trainer.epochs)
        pconf = OmegaConf.to_container(self.conf.pruner, resolve=True)
        if len(directions) > 1 and pconf.get("name") != "none":
            log.warning("multi-objective study: Optuna cannot prune it, so pruning is off")
            pconf = {"name": "none"}
        make_pruner(pconf, max_epochs)  # validate the pruner config now
        sconf = OmegaConf.to_container(self.conf.sampler, resolve=True)
        for attempt in range(5):  # workers starting together race to create the storage's tables
            try:
                storage = open_storage(url, heartbeat=True)
                study = optuna.create_study(study_name=self.study_name, storage=storage, directions=directions,
                                            sampler=make_sampler(sconf), load_if_exists=True)
                break
            except Exception:
                forget_storage(url)
                if attempt == 4:
                    raise
                time.sleep(0.5 * (attempt + 1))
        if list(d.name.lower() for d in study.directions) != directions:
            raise SweepConfigError(f"hydra.sweeper.direction: study {self.study_name!r} in {url} already has "
                                   f"directions {[d.name.lower() for d in study.directions]}")
        study.set_user_attr("archsearch.pruner", pconf)
        study.set_user_attr("archsearch.max_epochs", max_epochs)
        study.set_user_attr("archsearch.base_overrides", base)  # retrain/export rebuild a trial's architecture
        self.tracker = make_tracker(OmegaConf.to_container(self.config.tracking, resolve=True), base_dir)
        self._recover(study)
        parent = self._parent_run(study)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        n_trials, max_fail = int(self.conf.n_trials), int(self.conf.max_failures)
        max_rej = int(self.conf.max_rejections_in_a_row)
        rejected_in_a_row, stop_reason = 0, None
        c = self._counts(study)
        log.info("study %s (%s): %d/%d trained trials so far, %d rejected; storage %s", self.study_name,
                 "/".join(directions), c["trained"], n_trials, c["REJECTED"], url)
        while True:
            c = self._counts(study)
            if c["trained"] + c["RUNNING"] >= n_trials:
                break
            if c["FAIL"] >= max_fail:
                stop_reason = f"stopped: {c['FAIL']} failed trials reached max_failures {max_fail}"
                break
            trial = study.ask()
            study.sampler = make_sampler(sconf, seed_offset=trial.number)  # distinct draws per trial, any worker
            trial.set_user_attr("worker", worker_id())
            values = {}
            try:
                for name, sw in space.items():
                    values[name] = suggest(trial, name, sw)
            except ValueError as e:
                trial.set_user_attr("state", "INVALID")  # the sweep's settings, not a trained trial: not counted
                study.tell(trial, state=TrialState.FAIL)
                if isinstance(e, SweepConfigError):
                    raise
                raise SweepConfigError(  # Optuna refuses a space other than the study's
                    f"hydra.sweeper.params.{name}: study {self.study_name!r} in {url} already searches "
                    f"{name} over a different space ({e}); keep the study's space or start a new study "
                    "with hydra.sweeper.study_name=NEW") from None
            overrides = base + [f"{k}={_fmt(v)}" for k, v in values.items()]
            overrides += TrialRef(self.study_name, url, trial.number, trial._trial_id, parent).overrides(_fmt)
            report, reasons, cfg = None, [], None
            try:
                cfg = self._compose(overrides)
                spec, report = gate(cfg)
            except BudgetRejected as e:
                from archsearch.analysis import analyze

                report = analyze(e.spec)
                reasons = [v.message for v in e.violations]
                amount = sum(v.amount for v in e.violations)
            except SpecError as e:
                reasons, amount = [str(e)], 1.0
            except Exception as e:  # an override that cannot be composed
                reasons, amount = [" ".join(str(e).split())[:300]], 1.0
            if reasons:
                rejected_in_a_row += 1
                trial.set_constraint("budget", amount)
                trial.set_user_attr("state", "REJECTED")
                trial.set_user_attr("reasons", reasons)
                if report is not None:
                    for k in MEASURED:
                        trial.set_user_attr(f"model.{k}", getattr(report, k))
                self._log_rejected(parent, trial, values, report, reasons)
                study.tell(trial, [self._worst(d, o, report) for d, o in zip(directions, self.objectives)])
                log.info("trial %d REJECTED (no job launched): %s", trial.number, "; ".join(reasons))
                if rejected_in_a_row >= max_rej:
                    stop_reason = (f"stopped: {rejected_in_a_row} candidates in a row were rejected by the budget "
                                   "(max_rejections_in_a_row); widen the budget or narrow the search space")
                    break
                continue
            rejected_in_a_row = 0
            trial.set_constraint("budget", 0.0)
            trial.set_user_attr("model.params", report.params)
            trial.set_user_attr("model.rf", report.rf)
            trial.set_user_attr("model.macs", report.macs)
            t0 = time.time()
            hb = _Heartbeat(storage, trial._trial_id)
            try:
                ret = self._launch(cfg, overrides, trial.number)
            finally:
                hb.stop()
            dur = time.time() - t0
            if ret.status == JobStatus.COMPLETED:
                val = ret.return_value
                if val is None or (isinstance(val, float) and not math.isfinite(val)):
                    trial.set_user_attr("state", "FAIL")
                    trial.set_user_attr("error", f"job returned {val!r}")
                    study.tell(trial, state=TrialState.FAIL)
                    log.warning("trial %d FAIL: job returned %r", trial.number, val)
                    continue
                trial.set_user_attr("state", "COMPLETE")
                vals = [float(val) if o == "val_acc" else float(getattr(report, o)) for o in self.objectives]
                study.tell(trial, vals)
                log.info("trial %d COMPLETE: %s in %.0fs %s", trial.number,
                         ", ".join(f"{o}={v:.4g}" for o, v in zip(self.objectives, vals)), dur, values)
            else:
                err = ret._return_value
                if isinstance(err, Pruned):
                    trial.set_user_attr("state", "PRUNED")
                    trial.set_user_attr("epochs", err.epoch)
                    study.tell(trial, state=TrialState.PRUNED)
                    log.info("trial %d PRUNED after epoch %d (val_acc %.4f)", trial.number, err.epoch, err.value)
                else:
                    _release(err)  # e.g. CUDA out of memory: free the failed trial's tensors first
                    msg = f"{type(err).__name__}: {err}"[:1000]
                    trial.set_user_attr("state", "FAIL")
                    trial.set_user_attr("error", msg)
                    study.tell(trial, state=TrialState.FAIL)
                    log.warning("trial %d FAIL: %s", trial.number, msg)

        return self._finish(study, parent, sweep_dir, stop_reason)

    def _finish(self, study, parent, sweep_dir: Path, stop_reason: str | None):
        from archsearch.report import leaderboard, summary_line, write_outputs

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

    def __init__(self, storage, trial_id: int, interval: float = 30.0):
        import threading

        self._stop = threading.Event()
        self._thread = None
        if hasattr(storage, "record_heartbeat") and getattr(storage, "heartbeat_interval", None):
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
