"""What a run continued from a checkpoint may change, checked before any data is loaded.

Every checkpoint stores the settings of its run (:func:`run_settings`). ``trainer.resume=PATH``
continues that run, in the same MLflow run: it may run elsewhere and otherwise (device, precision,
compilation, workers, data folder, tracking), but not train otherwise, or the run's parameters
would describe epochs it did not train; a difference is refused naming the setting.

``trainer.branch=true`` starts a new run from the checkpoint instead (its epochs so far copied in):
the ablation of a training's last phase without paying for its first. A branch may also change
what is read afresh each epoch or at the end (augmentation and mixing, label smoothing, test-time
augmentation); never the network, the optimiser, the schedule's length or the seed, which the
checkpoint's optimiser, scheduler and random states hold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from archsearch.errors import ConfigError
from archsearch.tracking.tracker import flatten

__all__ = ["BRANCH_MAY_CHANGE", "check_settings", "run_settings"]

# where and how fast a run goes, and where it logs: never what it trains
_RUN_ONLY = ("tracking", "hydra", "trial", "run_name", "budget", "model", "trainer.resume", "trainer.branch",
             "trainer.checkpoint", "trainer.device", "trainer.amp", "trainer.channels_last", "trainer.compile",
             "trainer.kernel_check", "trainer.workers", "trainer.log_every", "trainer.progress",
             "trainer.system_metrics", "trainer.eval_batch_size", "trainer.deterministic", "data.root", "data.cache", "data.download")
_UNSET = "(not set)"
BRANCH_MAY_CHANGE = ("aug", "trainer.label_smoothing", "trainer.tta")


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def _same(a: Any, b: Any) -> bool:
    """0 and 0.0 are one value (typed either way); true and 1 are not."""
    return a is b if isinstance(a, bool) or isinstance(b, bool) else a == b


def _text(v: Any) -> str:
    """As a user writes it in an override: true, null, 0.05."""
    if isinstance(v, bool) or v is None:
        return {True: "true", False: "false", None: "null"}[v]
    return str(v)


def run_settings(resolved: dict) -> dict[str, Any]:
    """The composed config's settings that shape what a run trains, flat (``aug.mix.mixup_alpha``).
    The network is left to the checkpoint's architecture hash, which is checked first."""
    return {k: v for k, v in flatten(resolved, text=False).items() if not _under(k, _RUN_ONLY)}


def check_settings(ck: dict, now: dict[str, Any], branch: bool) -> list[str]:
    """Refuse, naming the first setting, a difference between the checkpoint's run and this one that
    the way of continuing does not allow; -> what a branch changes (``aug.mix.cooldown=false``).
    A checkpoint written before settings were stored is checked against the run's config.yaml beside
    it, where there is one, and not checked otherwise."""
    path: Path = ck["path"]
    saved: dict[str, Any] | None = ck.get("settings")
    if saved is None and (path.parent / "config.yaml").is_file():
        saved = run_settings(OmegaConf.to_container(OmegaConf.load(path.parent / "config.yaml"), resolve=True))
    if saved is None:
        return []
    differ = [k for k in sorted(set(saved) | set(now)) if not _same(saved.get(k, _UNSET), now.get(k, _UNSET))]
    refused = [k for k in differ if not (branch and _under(k, BRANCH_MAY_CHANGE))]
    if refused:
        key = refused[0]
        if branch:
            how = (f"a branch may change only {', '.join(p + ('.*' if p == 'aug' else '') for p in BRANCH_MAY_CHANGE)} "
                   "(the checkpoint's optimiser, schedule and random states hold the rest)")
        elif all(_under(k, BRANCH_MAY_CHANGE) for k in refused):
            how = "resume with the checkpoint's value, or add trainer.branch=true to start a new run from it with this one"
        else:
            how = "resume with the checkpoint's value"
        more = f" (also differ: {', '.join(refused[1:])})" if refused[1:] else ""
        raise ConfigError(f"{key}: {path} was trained with {key}={_text(saved.get(key, _UNSET))}, this run sets "
                          f"{_text(now.get(key, _UNSET))}; {how}{more}")
    changed = [f"{k}={_text(now.get(k, _UNSET))}" for k in differ]
    return changed
