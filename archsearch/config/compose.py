"""Compose Hydra configs from ``conf/`` and turn them into specs, with one-line errors.

Where the files are is :mod:`archsearch.config.paths`'s business; this module asks Hydra for
the composed config and checks the choices before Hydra does, so a mistake reads as one line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from archsearch.config.paths import CONF_DIR, available, groups, search_dirs
from archsearch.errors import ConfigError, SpecError
from archsearch.grammar.budget import Budget, parse_budget
from archsearch.grammar.spec import ModelSpec, parse_spec

__all__ = ["check_choices", "compose", "compose_with_hydra", "load_budget", "load_spec", "spec_from_cfg"]


_GROUP_CHOICE = re.compile(r"^([a-z_]+)=([^=]*)$")
_SWEEPS = ("choice(", "range(", "interval(", "tag(", "glob(")


def group_choices(overrides: Sequence[str], dirs: Sequence[Path] | None = None) -> list[tuple[str, str]]:
    """The ``group=option`` choices an override list makes (each option of a multirun list)."""
    known = set(groups(dirs))
    out = []
    for ov in overrides:
        m = _GROUP_CHOICE.match(ov.lstrip("+~"))
        if not m or m.group(1) not in known:
            continue
        group, value = m.groups()
        if value.strip().startswith(_SWEEPS):
            continue  # a sweep over options: each candidate is checked when the sweeper composes it
        out += [(group, v.strip()) for v in value.split(",") if v.strip()]
    return out


def check_choices(overrides: Sequence[str], config_name: str | None = "config") -> None:
    """``model=nonexistent`` -> ConfigError listing the available options (before Hydra's own);
    a file the composition reads that is not well-formed YAML -> ConfigError naming the file,
    line and column. ``config_name=None``: only the files these overrides choose (a sweep
    candidate's, whose primary config was checked when the sweep started)."""
    # (PyYAML loads with the first check, not on `import archsearch`: see compose)
    from archsearch.config.yamlcheck import check_config_files

    dirs = search_dirs(overrides)
    choices = group_choices(overrides, dirs)
    for group, v in choices:
        opts = available(group, dirs)
        if v not in opts:
            raise ConfigError(f"{group}: no config {v!r}; available: {', '.join(opts)}")
    check_config_files(choices, dirs, config_name)


def compose_with_hydra(config_name: str, overrides: Sequence[str] = ()) -> Any:
    """Like :func:`compose`, keeping the ``hydra`` node (sweeper settings, choices)."""
    return compose(config_name, overrides, return_hydra_config=True)


def compose(config_name: str, overrides: Sequence[str] = (), return_hydra_config: bool = False) -> Any:
    """Compose ``conf/<config_name>.yaml`` with Hydra overrides; errors become ConfigError."""
    # Hydra, OmegaConf and PyYAML load when a config is composed, not on `import archsearch` (which
    # imports this module): parsing and analysing a spec, and every other module's import, stay light
    from hydra import compose as _compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    check_choices(overrides, config_name)
    gh = GlobalHydra.instance()
    was = gh.is_initialized()
    try:
        if was:  # inside a running Hydra app: compose with a fresh, temporary instance
            hydra_state = gh.hydra
            gh.clear()
        with initialize_config_dir(version_base=None, config_dir=str(CONF_DIR)):
            return _compose(config_name=config_name, overrides=list(overrides),
                            return_hydra_config=return_hydra_config)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(_one_line(e)) from None
    except (TypeError, ValueError, KeyError, IndexError) as e:  # Hydra's own slips on odd overrides
        raise ConfigError(f"could not apply overrides {' '.join(overrides)}: {e}") from None
    finally:
        if was:
            gh.clear()
            gh.initialize(hydra_state)


def _one_line(e: BaseException) -> str:
    """Hydra's multi-line errors (and their cause) as one line."""
    parts = []
    for err in (e, e.__cause__):
        if err is None:
            continue
        for line in str(err).splitlines():
            line = " ".join(line.split())
            if line and not line.startswith(("full_key:", "object_type", "Set the environment")) and line not in parts:
                parts.append(line)
    return "; ".join(parts).replace(".;", ";")


def spec_from_cfg(model_cfg: Any) -> ModelSpec:
    """A ModelSpec from a composed ``cfg.model`` (DictConfig) or a plain dict."""
    # (OmegaConf: not on `import archsearch`, see compose)
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(model_cfg, DictConfig):
        raw = OmegaConf.to_container(model_cfg, resolve=False)
        try:
            resolved = OmegaConf.to_container(model_cfg, resolve=True)
        except OmegaConfBaseException as e:
            key = getattr(e, "full_key", "") or "model"
            msg = str(e).split("\n")[0]
            raise SpecError(key if key.startswith("model") else f"model.{key}", msg) from None
        return parse_spec(resolved, raw=raw)
    return parse_spec(model_cfg)


def load_spec(name: str, overrides: Sequence[str] = ()) -> ModelSpec:
    """``load_spec("dilated_sep", overrides=["model.layers.2.d=1"])`` -> ModelSpec."""
    cfg = compose("validate", [f"model={name}", *overrides])
    return spec_from_cfg(cfg.model)


def load_budget(overrides: Sequence[str] = ()) -> Budget:
    # (OmegaConf: not on `import archsearch`, see compose)
    from omegaconf import OmegaConf

    cfg = compose("validate", list(overrides))
    return parse_budget(OmegaConf.to_container(cfg.budget, resolve=True))
