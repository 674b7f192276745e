"""Checkpoints: ``last.pt`` after every epoch, ``best.pt`` at the best validation accuracy.

One schema, written and read here only: the engine's states (model, optimizer, scheduler,
scaler, ema), the run's :class:`~archsearch.training.engine.TrainState` (epoch, best_val, history,
run_id), what it was trained on (spec, spec_hash) and the RNG states, so that
``trainer.resume=PATH/last.pt`` continues exactly where the run stopped. Reading refuses a
file with missing or unknown keys, or of another architecture, in one line; the run's settings
stored with it are checked against the resuming run's by archsearch.training.resume_check.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from archsearch.errors import ConfigError
from archsearch.files import write_whole
from archsearch.training.engine import Engine, TrainState

__all__ = ["KEYS", "REQUIRED", "read", "restore", "save"]

# torch is imported in the functions that use it: archsearch.train imports the training modules at
# its top and refuses a mistyped knob before torch is loaded, and `from archsearch import fit` loads
# torch only when called

REQUIRED = frozenset({"model", "optimizer", "scheduler", "scaler", "ema", "epoch", "best_val", "history",
                      "spec_hash", "spec", "run_id", "rng"})
KEYS = REQUIRED | {"settings"}  # the run's settings (archsearch.training.resume_check); older files lack them


def _rng_state() -> dict:
    import torch

    # the GPUs' generators too (dropout, random init on the device): a resumed run is the run it continues
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return {"torch": torch.get_rng_state(), "cuda": cuda, "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(rng: dict) -> None:
    import torch

    torch.set_rng_state(rng["torch"])
    cuda = rng.get("cuda") or []  # absent in a checkpoint written on a CPU
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])


def save(path: Path, engine: Engine, state: TrainState, spec, spec_hash: str, settings: dict) -> None:
    """Write atomically: a killed run never leaves a truncated checkpoint."""
    import torch

    ck = {**engine.state_dict(), "epoch": state.epoch - 1, "best_val": state.best_val, "history": state.history,
          "spec_hash": spec_hash, "spec": spec.to_dict(), "run_id": state.run_id, "rng": _rng_state(),
          "settings": settings}
    write_whole(path, lambda f: torch.save(ck, f))


def read(path_str: str, spec_hash: str) -> dict:
    """The checkpoint at ``path_str``, refused in one line if absent, unreadable, not ours or of
    another architecture: before any data is loaded or a run started."""
    import torch

    path = Path(path_str).expanduser()
    if not path.exists():
        raise ConfigError(f"trainer.resume: no checkpoint at {path}")
    try:
        # onto the CPU: the RNG states must stay CPU ByteTensors (torch.set_rng_state refuses a CUDA
        # one); the engine's load_state_dict copies the weights and optimiser state to its device
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise ConfigError(f"trainer.resume: {path} is not a readable checkpoint ({type(e).__name__})") from None
    keys = set(ck) if isinstance(ck, dict) else set()
    if not REQUIRED <= keys <= KEYS:
        raise ConfigError(f"trainer.resume: {path} is not an archsearch checkpoint (missing "
                          f"{sorted(REQUIRED - keys)}, unknown {sorted(keys - KEYS)})")
    if ck["spec_hash"] != spec_hash:
        raise ConfigError(f"trainer.resume: {path} holds a different architecture "
                          f"(spec {ck['spec_hash']}, this run {spec_hash})")
    ck["path"] = path
    return ck


def restore(ck: dict, engine: Engine) -> TrainState:
    """Restore ``engine`` and the RNGs from a checkpoint :func:`read` -> the run's TrainState."""
    if engine.ema is not None and not ck["ema"]:
        raise ConfigError(f"trainer.ema: {ck['path']} was trained without EMA; resume with trainer.ema=null")
    engine.load_state_dict(ck)
    _set_rng_state(ck["rng"])
    return TrainState(epoch=ck["epoch"] + 1, best_val=ck["best_val"], history=ck["history"], run_id=ck["run_id"])
