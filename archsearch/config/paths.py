"""Where things are: archsearch's ``conf/`` folder (``ARCHSEARCH_CONF`` overrides it), the user's
own config folders (``hydra.searchpath``), and the base folder that holds ``mlruns/`` and
``outputs/``. The only module that decides either.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from archsearch.errors import ConfigError

__all__ = ["CONF_DIR", "available", "base_dir", "config_file", "groups", "search_dirs"]


CONF_DIR = Path(os.environ.get("ARCHSEARCH_CONF", Path(__file__).resolve().parents[2] / "conf"))


def search_dirs(overrides: Sequence[str] = ()) -> list[Path]:
    """Where config groups are looked up: the user's own folders first (the override
    ``hydra.searchpath=[file:///path/to/conf]``, Hydra's own setting, which ``train`` and the
    sweeper honour natively), then archsearch's ``conf/``."""
    dirs: list[Path] = []
    for ov in overrides:
        key, _, value = ov.lstrip("+~").partition("=")
        if key != "hydra.searchpath":
            continue
        for item in value.strip().strip("[]").split(","):
            item = item.strip().strip("'\"")
            if item.startswith("file://"):
                item = item[len("file://"):]
            if item and not item.startswith("pkg://"):
                d = Path(item).expanduser()
                if not d.is_dir():
                    raise ConfigError(f"hydra.searchpath: {item} is not a folder (expected file:///path/to/conf "
                                      "holding model/, sweep/, ... subfolders)")
                dirs.append(d)
    return [*dirs, CONF_DIR]


def available(group: str, dirs: Sequence[Path] | None = None) -> list[str]:
    found = set()
    for base in dirs or [CONF_DIR]:
        d = base / group
        if d.is_dir():
            found.update(p.stem for p in d.glob("*.yaml"))
    return sorted(found)


def config_file(group: str, option: str, dirs: Sequence[Path] | None = None) -> Path | None:
    """The file Hydra will read for ``group=option`` (the first folder of the search path that has it)."""
    for base in dirs or [CONF_DIR]:
        f = base / group / f"{option}.yaml"
        if f.is_file():
            return f
    return None


def groups(dirs: Sequence[Path] | None = None) -> list[str]:
    return sorted({p.name for base in dirs or [CONF_DIR] if base.is_dir() for p in base.iterdir() if p.is_dir()})


# ------------------------------------------------------------------ the base folder
def base_dir() -> Path:
    """Where ``mlruns/`` (MLflow, the default journal storage) and ``outputs/`` live:
    ``$ARCHSEARCH_BASE`` or the working directory, as for the sweeper and the training job."""
    return Path(os.environ.get("ARCHSEARCH_BASE", os.getcwd()))
