"""How every ``python -m archsearch.*`` command starts and ends.

:func:`start` is the common start: the arguments (``sys.argv`` unless given), ``--help`` prints
the command's docstring, and a user mistake (any of :data:`USER_ERRORS`) is one line on stderr
and exit status 2. :func:`split_args`, :func:`positive_int` and :func:`boolean` read a command's
own ``key=value`` arguments apart from the Hydra overrides it passes on.

:func:`run` is the common end.

A process that has imported torch, MLflow, Hydra and Optuna spends 1-3 s after its last line
in the interpreter's teardown: freeing the objects of thousands of modules one by one, none
of which has anything left to write. A sweep of 2-second trials pays that once per trial
process. :func:`run` does the part of the teardown that matters itself (stops thread pools and
waits for the non-daemon threads, runs the ``atexit`` handlers: logging flushes and closes its files,
MLflow ends its active runs, multiprocessing stops its daemonic children; flushes stdout and
stderr) and then ends the process at once with :func:`os._exit`.

SIGTERM (``kill``, a scheduler's pre-emption, a sweeper stopping its trials) unwinds like
Ctrl-C but quietly: ``SystemExit(128 + 15)`` is raised where the command is, so its ``finally``
blocks and context managers run (a training closes its MLflow run as KILLED, a half-written
file is not left looking complete) and the process ends with status 143, as a killed one would.

A reader that stops early (``... | head``) ends the command quietly, status 0, instead of a
``BrokenPipeError`` traceback.

A bug (any exception other than ``SystemExit``) or Ctrl-C propagates as usual: traceback,
normal teardown; so does every exit under a profiler, debugger or coverage tool, which write
their results after the command's last line.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import NoReturn

from archsearch.errors import (
    AugError,
    BudgetError,
    ConfigError,
    DataError,
    OpError,
    SpecError,
    StudyError,
    SweepConfigError,
)

__all__ = ["USER_ERRORS", "boolean", "positive_int", "run", "split_args", "start"]


def _terminate(signum: int, frame) -> NoReturn:
    raise SystemExit(128 + signum)


def run(main: Callable[[], int | None]) -> NoReturn:
    """``main()`` -> exit with its code (or its ``SystemExit``'s), skipping the teardown."""
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:  # not when the caller chose to ignore it (nohup-like)
        signal.signal(signal.SIGTERM, _terminate)
    try:
        code = main()
    except SystemExit as e:
        code = e.code
    except BrokenPipeError:  # `... | head` stopped reading: what it wanted was printed
        sys.stdout = None
        code = 0
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message"): the message on stderr, status 1
        print(code, file=sys.stderr)
        code = 1
    if sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(code)  # under cProfile, a debugger or coverage: they write their results after this
    # what the interpreter does first at exit: the callbacks registered with threading (thread pools
    # such as torch.compile's stop their workers there), then a join of the non-daemon threads;
    # joining without the callbacks would wait forever on an idle pool's worker
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:  # None: a command that met a broken pipe (| head) let it go
                stream.flush()
        except (OSError, ValueError):  # closed, or a broken pipe: nothing left to save
            pass
    os._exit(code)


# ------------------------------------------------------------------ start
USER_ERRORS = (AugError, BudgetError, ConfigError, DataError, OpError, SpecError, StudyError, SweepConfigError)


def start(doc: str, body: Callable[[list[str]], int], argv: Sequence[str] | None = None,
          help_extra: Callable[[], str] | None = None) -> int:
    """Run ``body(arguments)`` as a command: ``-h``/``--help`` prints ``doc`` (and ``help_extra()``),
    status 0; a user mistake prints ``error: <one line>`` on stderr, status 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(doc.strip())
        if help_extra is not None:
            print(help_extra())
        return 0
    try:
        return body(args)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


# ------------------------------------------------------------------ arguments
def split_args(argv: Sequence[str], own: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """``key=value`` arguments of the command itself (``own`` keys) apart from Hydra overrides."""
    mine: dict[str, str] = {}
    rest: list[str] = []
    for a in argv:
        key, eq, value = a.partition("=")
        if eq and key in own:
            mine[key] = value.strip()
        else:
            rest.append(a)
    return mine, rest


def positive_int(field_name: str, value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{field_name}: must be a whole number >= 1; got {value!r}")
    return int(value)


def boolean(field_name: str, value: str) -> bool:
    v = value.lower()
    if v not in ("true", "false"):
        raise ConfigError(f"{field_name}: must be true or false; got {value!r}")
    return v == "true"
