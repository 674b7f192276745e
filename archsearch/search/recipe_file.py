"""A sweep trial's training recipe as a file of the ``recipe`` config group (``conf/recipe/NAME.yaml``):
what ``python -m archsearch.export what=recipe`` writes, so that ``python -m archsearch.train
model=M recipe=NAME`` trains with the recipe a search found, in one override.

The recipe is every key of the groups ``optim``, ``sched``, ``trainer`` and ``aug`` whose value in the
trial's full-recipe config differs from the defaults (the trial's sampled values, and what the sweep
file itself set, such as ``optim.batch_scaling``), plus the group options it chose (``optim=adamw``)
as defaults-list overrides. Keys that describe the run rather than the recipe (epochs, device,
precision, progress, checkpoints, ...) are left out: the command line sets those.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml
from omegaconf import OmegaConf

from archsearch.config.compose import compose

__all__ = ["RECIPE_GROUPS", "RUN_KEYS", "recipe_diff", "recipe_yaml"]

RECIPE_GROUPS = ("optim", "sched", "trainer", "aug")
# the run, not the recipe: how long, where, in what precision, with what output
RUN_KEYS = frozenset({"trainer.epochs", "trainer.progress", "trainer.device", "trainer.workers", "trainer.resume",
                      "trainer.checkpoint", "trainer.log_every", "trainer.system_metrics", "trainer.compile",
                      "trainer.amp", "trainer.channels_last", "trainer.deterministic", "trainer.eval_batch_size"})


def _flat(node: Any, prefix: str) -> dict[str, Any]:
    if isinstance(node, Mapping) and node:
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}.{k}"))
        return out
    return {prefix: node}


def recipe_diff(cfg) -> tuple[dict[str, str], dict[str, Any]]:
    """A composed trial config (with its ``hydra`` node) -> (the group options it chose that differ
    from the defaults, {dotted key: value} of its recipe keys that differ from those options' defaults)."""
    default_choices = compose("config", [], return_hydra_config=True).hydra.runtime.choices
    choices = {g: str(cfg.hydra.runtime.choices[g]) for g in RECIPE_GROUPS
               if cfg.hydra.runtime.choices.get(g) not in (None, default_choices.get(g))}
    plain = compose("config", [f"{g}={c}" for g, c in choices.items()])  # the defaults of the options it chose
    values = {}
    for g in RECIPE_GROUPS:
        mine = _flat(OmegaConf.to_container(cfg[g], resolve=True), g)
        base = _flat(OmegaConf.to_container(plain[g], resolve=True), g)
        values.update({k: v for k, v in mine.items() if k not in RUN_KEYS and (k not in base or base[k] != v)})
    return choices, values


def _nested(values: Mapping[str, Any]) -> dict:
    out: dict = {}
    for key, v in values.items():
        *path, leaf = key.split(".")
        node = out
        for p in path:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


def recipe_yaml(header: str, choices: Mapping[str, str], values: Mapping[str, Any]) -> str:
    """The recipe file's text: ``# @package _global_`` (Hydra reads it on the first line only),
    ``header`` (comment lines), the group options as defaults-list overrides, then the values."""
    body: dict[str, Any] = {}
    if choices:
        body["defaults"] = [{f"override /{g}": c} for g, c in choices.items()]
    body.update(_nested(values))
    text = yaml.safe_dump(body, sort_keys=False, default_flow_style=False) if body else ""
    return f"# @package _global_\n{header}{text}"
