"""SOURCE -> the user's ``nn.Module``: ``path/to/model.py:ClassName`` or ``package.module:ClassName``
(a class or a factory function), called with the ``init.*`` keyword arguments.

This runs the user's code: the file is imported as Python, as ``python path/to/model.py`` would
run it. It happens only for a SOURCE the user names on the command line."""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from pathlib import Path

import yaml
from torch import nn

from archsearch.importer.problems import ImportProblem

__all__ = ["load_model", "parse_init", "split_import_args", "split_source"]

_SOURCE = re.compile(r"(?P<mod>[^:]+):(?P<attr>[A-Za-z_]\w*)")


def split_source(source: str) -> tuple[str, str]:
    """(file or module, attribute) of SOURCE, or ImportProblem."""
    m = _SOURCE.fullmatch(source or "")
    if not m:
        raise ImportProblem(f"SOURCE: expected path/to/model.py:ClassName or package.module:ClassName; got {source!r}")
    return m["mod"], m["attr"]


def split_import_args(argv, own) -> tuple[str | None, dict, dict, list[str]]:
    """(SOURCE or None, the ``own`` key=value settings, the ``init.*`` arguments parsed, the rest) of a
    command line; SOURCE is the one argument without ``=``."""
    sources = [a for a in argv if "=" not in a and not a.startswith("~")]
    if len(sources) > 1:
        raise ImportProblem(f"SOURCE: give one path/to/model.py:ClassName or package.module:ClassName; got "
                            f"{', '.join(map(repr, sources))}")
    mine, rest, init = {}, [], {}
    for a in argv:
        key, eq, value = a.partition("=")
        if a in sources:
            continue
        if key in own:
            mine[key] = value.strip()
        elif key.startswith("init.") and len(key) > 5:
            init[key[5:]] = value
        else:
            rest.append(a)
    return (sources[0] if sources else None), mine, parse_init(init), rest


def parse_init(items: dict[str, str]) -> dict:
    """``init.ARG=VALUE`` values read as YAML scalars (``64`` -> 64, ``0.1``, ``true``, ``relu``)."""
    out = {}
    for key, text in items.items():
        try:
            out[key] = yaml.safe_load(text) if text else None
        except yaml.YAMLError as e:
            raise ImportProblem(f"init.{key}: not a YAML value ({str(e).splitlines()[0]}): {text!r}") from None
    return out


def _import_file(path: Path):
    if not path.is_file():
        raise ImportProblem(f"SOURCE: no file {path}")
    name = f"archsearch_user_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.resolve().parent))  # so the file finds its sibling modules
    try:
        sys.modules[name] = module
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.resolve().parent))
    return module


def load_model(source: str, init: dict) -> tuple[nn.Module, str]:
    """The module SOURCE names, built with ``init``; and its label for messages (``ClassName``)."""
    where, attr = split_source(source)
    try:
        if where.endswith(".py") or "/" in where or "\\" in where:
            module = _import_file(Path(where).expanduser())
        else:
            module = importlib.import_module(where)
    except ImportProblem:
        raise
    except Exception as e:
        raise ImportProblem(f"SOURCE: importing {where} failed: {type(e).__name__}: {_first_line(e)}") from None
    if not hasattr(module, attr):
        found = sorted(k for k, v in vars(module).items() if isinstance(v, type) and issubclass(v, nn.Module)
                       and v.__module__ == module.__name__)
        raise ImportProblem(f"SOURCE: {where} has no {attr}; its nn.Module classes: {', '.join(found) or '(none)'}")
    try:
        model = getattr(module, attr)(**init)
    except TypeError as e:
        raise ImportProblem(f"init: {attr}(**{init}) failed: {_first_line(e)}") from None
    except Exception as e:
        raise ImportProblem(f"{attr}: building it failed: {type(e).__name__}: {_first_line(e)}") from None
    if not isinstance(model, nn.Module):
        raise ImportProblem(f"SOURCE: {attr}(...) returned {type(model).__name__}, not a torch.nn.Module")
    return model, attr


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
