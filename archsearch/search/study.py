"""Optuna pieces shared by the sweeper (:mod:`archsearch.search.sweeper`), the training job
(pruning reports, through :mod:`archsearch.search.trial`) and the report: storages, samplers,
pruners, trial states and their counts, the sweep's command-line dimensions.

Trial states as archsearch records them (user attribute ``state``):
COMPLETE / PRUNED / FAIL (trained trials, they count towards ``n_trials``),
REJECTED (refused by the budget before launch: told to Optuna as PRUNED with no reported
epoch and a positive ``budget`` constraint, so TPE ranks it infeasible and learns the feasible
region, while Optuna's best trial, importance and plots, which read COMPLETE trials, never
take it for a trained result; not counted as trained), INTERRUPTED (its process died; retried).

optuna, sqlalchemy and Hydra's override parser are imported inside the functions that use them:
the report, retrain and export commands import this module at start-up (for ``TRAINED`` and
``override_value``) and load them only when they open a study.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from archsearch.errors import StudyError

__all__ = ["TRAINED", "count_states", "draw_index", "forget_storage", "make_pruner", "open_storage",
           "override_key", "override_value", "pid_alive", "retrying", "split_sweep_args", "storage_url", "worker_id"]

TRAINED = ("COMPLETE", "PRUNED", "FAIL")
PRUNERS = ("hyperband", "median", "none")


def override_value(v: Any) -> str:
    """A sampled value as Hydra override text (``model.wide=48``, ``optim.lr=0.05``): how the
    sweeper launches a trial and how retrain/export rebuild its config."""
    if isinstance(v, str):
        return v if re.fullmatch(r"[A-Za-z0-9_.\-/]+", v) else "'" + v.replace("'", "\\'") + "'"
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):  # Hydra's list and dict syntax: the job receives a list / a dict
        return "[" + ",".join(override_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{override_value(x)}" for k, x in v.items()) + "}"
    return repr(v)


def override_key(override: str) -> str:
    """``+model.x=1`` -> ``model.x``."""
    return override.lstrip("+~").partition("=")[0]


def storage_url(storage: str | None, study_name: str, base_dir: str | Path) -> str:
    """null -> ``journal:<base>/mlruns/optuna/<study>.journal``; other values pass through."""
    if storage:
        return str(storage)
    path = Path(base_dir).resolve() / "mlruns" / "optuna" / f"{study_name}.journal"
    return f"journal:{path}"


_STORAGES: dict[str, Any] = {}


def open_storage(url: str, heartbeat: tuple[int, int] | bool = False):
    """One storage object per URL and process: trials launched in-process reuse the sweeper's
    (heartbeat included), so a journal file is not replayed from the start for every trial
    (flat per-trial overhead). ``heartbeat`` ((interval, grace) seconds, or True for 30, 120)
    applies to RDB storages when this call opens the storage."""
    if url not in _STORAGES:
        _STORAGES[url] = _open_storage(url, (30, 120) if heartbeat is True else heartbeat)
    return _STORAGES[url]


def forget_storage(url: str) -> None:
    _STORAGES.pop(url, None)


def _open_storage(url: str, heartbeat):
    import optuna

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url[len("journal:"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if url.split(":", 1)[0].split("+", 1)[0] in ("sqlite", "postgresql", "mysql"):
        # a connection the server dropped (a restart) is replaced on its next use, not raised
        kw: dict[str, Any] = {"engine_kwargs": {"pool_pre_ping": True}}
        if heartbeat:  # lets another machine fail (and retry) a trial whose worker died
            interval, grace = heartbeat
            kw.update(heartbeat_interval=int(interval), grace_period=int(grace))  # the sweeper fails stale trials
        return optuna.storages.RDBStorage(url, **kw)
    raise StudyError(f"hydra.sweeper.storage: unsupported storage {url!r}; use null (journal file), "
                     "journal:PATH, sqlite:///PATH or postgresql://user:pass@host/db")


def retrying(call, *args, attempts: int = 8, **kw):
    """``call(*args, **kw)``, retried with backoff (about 30 s in all) while the database is unreachable
    (a PostgreSQL restart): a report or a tell outlives a short outage instead of failing the trial."""
    from sqlalchemy.exc import DBAPIError

    for i in range(attempts):
        try:
            return call(*args, **kw)
        except DBAPIError as e:
            if not e.connection_invalidated and "connect" not in str(e).lower() and "terminat" not in str(e).lower():
                raise
            if i == attempts - 1:
                raise
            time.sleep(min(0.5 * 2 ** i, 8.0))


def split_sweep_args(arguments) -> tuple[list[str], dict[str, str]]:
    """Command-line overrides -> (the plain ones, {key: a search dimension in the override grammar}),
    as the sweeper reads them. Hydra's override parser tells a sweep from a plain value: ``k=choice(...)``,
    ``range(...)``, ``interval(...)``, ``tag(...)`` or a comma list ``k=a,b`` (kept as ``choice(a,b)``)
    add a dimension, keyed as written (``+key`` stays ``+key``). An override the parser refuses stays plain: Hydra
    reports it where it composes the config (the sweeper's arguments were parsed by Hydra already)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ValueType

    parser = OverridesParser.create()
    plain, space = [], {}
    for a in map(str, arguments):
        try:
            ov = parser.parse_override(a)
        except Exception:  # Hydra's OverrideParseException
            ov = None
        if ov is None or not ov.is_sweep_override():
            plain.append(a)
            continue
        k, _, v = a.partition("=")  # the key as written: a leading + or ++ is kept (the job adds the key)
        space[k] = f"choice({v})" if ov.value_type == ValueType.SIMPLE_CHOICE_SWEEP else v
    return plain, space


def count_states(study) -> dict[str, int]:
    """The study's trials by archsearch state (COMPLETE, PRUNED, FAIL, REJECTED, INTERRUPTED) and RUNNING,
    with ``trained`` = COMPLETE + PRUNED + FAIL (what ``n_trials`` counts); WAITING ones (re-queued) are not."""
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


def draw_index(study, number: int) -> int:
    """The sampler's seed offset for trial ``number``: its place among the trials the sampler drew,
    not counting those enqueued with fixed parameters (a stopped trial's retry takes the next
    trial number, and would otherwise shift every later draw). So a study stopped and resumed
    draws the same candidates in the same order as one that ran through, and two studies with
    the same sampler seed (the same candidates under two proxies) stay aligned."""
    return number - sum(1 for t in study.get_trials(deepcopy=False)
                        if t.number < number and "fixed_params" in t.system_attrs)


def make_pruner(conf: Mapping[str, Any] | None, max_epochs: int):
    import optuna

    conf = conf or {"name": "none"}
    name = conf.get("name", "none")
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=int(conf.get("min_resource", 1)), max_resource=max_epochs,
                                              reduction_factor=int(conf.get("reduction_factor", 3)))
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=int(conf.get("n_startup_trials", 4)),
                                           n_warmup_steps=int(conf.get("n_warmup_steps", 1)))
    if name == "none":
        return optuna.pruners.NopPruner()
    raise StudyError(f"hydra.sweeper.pruner.name: unknown pruner {name!r}; choose one of {', '.join(PRUNERS)}")


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def pid_alive(worker: str) -> bool | None:
    """True/False for a worker on this host; None when it ran elsewhere (can't tell)."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
