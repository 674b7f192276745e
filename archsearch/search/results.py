"""Reading a study back: opening it by its sweep's name, how it was scored, and the full-recipe
retrains recorded on it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import optuna

from archsearch.config.compose import compose_with_hydra
from archsearch.config.paths import base_dir
from archsearch.errors import ConfigError
from archsearch.search.study import open_storage, storage_url


def scored_by(study) -> str:
    """The objective(s) a sweep scored its trials by without training them (``"macs"``, ...), or ''
    for a study of trained trials."""
    return str(study.user_attrs.get("archsearch.scored") or "")


def score_column(study) -> str:
    """The leaderboard column holding a scored study's (first) objective, e.g. ``macs``; '' for a
    study of trained trials (its column is ``val_acc``)."""
    first = scored_by(study).split(",")[0]
    return first if first in COLUMNS else ""


def score_order(study) -> tuple[str, bool]:
    """(column, best is highest) a scored study's trials rank by; ('', True) for trained trials."""
    col = score_column(study)
    return col, (not col) or study.directions[0].name == "MAXIMIZE"


def open_study(overrides: Sequence[str]):
    """``sweep=NAME`` (and any overrides, ``hydra.sweeper.study_name`` / ``storage`` included)
    -> (the composed config with its hydra node, the Optuna study, its storage URL).
    No sweep named, or no such study: ConfigError (one line)."""
    cfg = compose_with_hydra("config", list(overrides))
    sw = cfg.hydra.sweeper
    name = sw.get("study_name") or cfg.hydra.runtime.choices.get("sweep")
    if not name:
        raise ConfigError("sweep: name a sweep (sweep=arch_dilated) or hydra.sweeper.study_name=NAME")
    study, url = load_named(cfg, str(name))
    return cfg, study, url


def load_named(cfg, name: str, field_name: str = "sweep"):
    """The study ``name`` in the storage the composed sweep config ``cfg`` points at -> (study,
    storage URL); none there: ConfigError naming ``field_name``."""
    url = storage_url(cfg.hydra.sweeper.get("storage"), name, base_dir())
    hint = {"sweep": f"run it first: python -m archsearch.train -m sweep={name}",
            "proxies": "name studies swept over the same candidates (the same sampler seed) under other proxies",
            }.get(field_name, "name the study whose trials python -m archsearch.retrain trained")
    missing = ConfigError(f"{field_name}: no study {name!r} in {url}; {hint}")
    if url.startswith("journal:") and not Path(url[len("journal:"):]).is_file():
        raise missing  # (opening it would leave an empty journal file behind)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(url))
    except KeyError:
        raise missing from None
    return study, url


# ------------------------------------------------------------------ proxy vs full recipe
MIN_RANKED = 3  # retrained trials needed before a rank correlation means anything


_RETRAIN_KEY = re.compile(r"retrain\.t(\d+)\.s(\d+)$")


def retrained(study) -> dict[int, dict[int, dict]]:
    """``{trial: {seed: record}}`` from the study's ``retrain.t<trial>.s<seed>`` attributes."""
    out: dict[int, dict[int, dict]] = {}
    for key, rec in study.user_attrs.items():
        m = _RETRAIN_KEY.match(key)
        if m and isinstance(rec, dict):
            out.setdefault(int(m[1]), {})[int(m[2])] = rec
    return out


def mean_of(values) -> float:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(vals) / len(vals) if vals else float("nan")


def proxy_val_acc(trial) -> float:
    """The trial's objective in the sweep (its best validation accuracy under the proxy recipe);
    nan for a trial scored without training (its score is the MACs or params column)."""
    if trial is None or not trial.values or trial.user_attrs.get("scored"):
        return float("nan")
    return float(trial.values[0])


COLUMNS = ["trial", "state", "val_acc", "test_acc", "params", "rf", "macs", "ms_per_image", "epochs", "epoch_to_val85",
           "duration_s", "sampled", "note", "run_id"]
