"""What the sweeper's test modules share: a sweep of the smoke study in a subprocess, its journal
study read back, and a setup several tests read run once (tests/search is on sys.path as each
test module's folder, so they import these as ``from sweeping import ...``)."""

import fcntl
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import FIXED, TINY


def sweep(cwd, *args, sweep_dir="multirun/s", check=True, background=False, probe=False):
    cmd = [sys.executable, "-m", "archsearch.train", "-m", "sweep=smoke", *TINY, *([] if probe else FIXED),
           f"hydra.sweep.dir={sweep_dir}", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if background:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


def study(cwd, name="smoke"):
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = Path(cwd) / "mlruns" / "optuna" / f"{name}.journal"
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.create_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(path))),
                               direction="maximize", load_if_exists=True)


def states(st):
    return {t.number: t.user_attrs.get("state", t.state.name) for t in st.get_trials()}


def a_running_trial(cwd, proc, timeout, poll=0.5):
    """The number of the first trial seen RUNNING with an epoch reported, while the sweep ``proc``
    runs; None if none within ``timeout`` seconds."""
    from optuna.trial import TrialState

    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        time.sleep(poll)
        try:
            running = [t for t in study(cwd).trials if t.state == TrialState.RUNNING and t.intermediate_values]
        except Exception:
            continue
        if running:
            return running[0].number
    return None

def once(tmp_path_factory, name: str, make):
    """``make(folder)`` run once per test session, also when pytest-xdist's workers share the session
    (the first to get here runs it; the others wait, then read what it returned) -> (folder, result)."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        folder = tmp_path_factory.mktemp(name)
        return folder, make(folder)
    root = tmp_path_factory.getbasetemp().parent  # the session's, shared by its workers
    folder, done = root / name, root / f"{name}.pickle"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            folder.mkdir(exist_ok=True)
            try:
                result = ("ok", make(folder))
            except BaseException as e:
                result = ("error", f"{type(e).__name__}: {e}")
                raise
            finally:
                done.write_bytes(pickle.dumps(result))
    kind, value = pickle.loads(done.read_bytes())
    if kind == "error":
        pytest.fail(f"{name}: failed in another worker: {value}")
    return folder, value
