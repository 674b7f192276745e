"""One sweep trial in a process of its own: what the archsearch sweeper starts for each
trial when it keeps several running (``hydra.sweeper.n_jobs > 1`` or a list of GPUs)::

    python -m archsearch.search.trial_process JOB_DIR

``JOB_DIR/.hydra/config.yaml`` is the trial's config, composed and passed by the budget gate
in the sweeper; the job trains it, reports every epoch to the Optuna trial (the pruner decides
there, as for a trial run in the sweeper's process) and writes ``JOB_DIR/result.json``:
``{"status": "COMPLETE", "value": best val}``, ``{"status": "PRUNED", "epoch", "value"}`` or
``{"status": "FAIL", "error"}``. A process that dies before writing it (a signal, the OOM
killer) is told apart by the sweeper by the missing file.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from archsearch import cli
from archsearch.errors import Pruned
from archsearch.files import write_whole
from archsearch.search.trial import TrialRef, trial_job_kwargs
from archsearch.training.job import train

__all__ = ["main", "run_trial"]

RESULT = "result.json"


def run_trial(cfg, job_dir: Path) -> dict[str, Any]:
    """Train one trial's config in ``job_dir`` -> the result record (never raises for a trial's own failure)."""
    ref = TrialRef.from_cfg(cfg.get("trial"))
    if ref is None:
        raise SystemExit(f"error: {job_dir / '.hydra' / 'config.yaml'}: no trial node; this module runs sweep trials")
    try:
        res = train(cfg, job_dir, **trial_job_kwargs(ref, int(cfg.trainer.epochs)))
    except Pruned as e:
        return {"status": "PRUNED", "epoch": e.epoch, "value": e.value}
    except Exception as e:  # the trial failed; the sweep goes on
        return {"status": "FAIL", "error": f"{type(e).__name__}: {e}"[:1000]}
    return {"status": "COMPLETE", "value": res.val_acc}


def write_result(job_dir: Path, result: dict[str, Any]) -> None:
    write_whole(job_dir / RESULT, json.dumps(result))  # whole or absent: the sweeper never reads half a result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m archsearch.search.trial_process JOB_DIR  (started by the archsearch sweeper)", file=sys.stderr)
        return 2
    job_dir = Path(argv[0])
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = OmegaConf.load(job_dir / ".hydra" / "config.yaml")
    write_result(job_dir, run_trial(cfg, job_dir))
    return 0


if __name__ == "__main__":
    # the canonical module, not __main__, so exception classes (Pruned, ...) are one
    from archsearch.search.trial_process import main as _main

    cli.run(_main)
