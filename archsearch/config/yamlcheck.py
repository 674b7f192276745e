"""Config files checked before Hydra reads them: one line per problem, naming the file and,
where YAML gives one, the line and column.

Hydra's own loader answers a syntax error, a tab, a duplicate key, a scalar at the root or a
``!!python/...`` tag with a long traceback, and a file of nested aliases (a "billion laughs"
file) with minutes of expansion. This module reads each file that a command will compose
(the primary config, the chosen option of every group, and the options a sweep file's
defaults choose) with PyYAML's composer, which keeps aliases as shared nodes, and refuses:

- anything PyYAML cannot parse (the message and position are PyYAML's),
- a key that appears twice in one mapping,
- any tag outside YAML's plain data types (``!!python/object`` and friends: configs are data),
- a root that is not a mapping,
- aliases that would expand to more than :data:`MAX_NODES` nodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml

from archsearch.config.paths import config_file
from archsearch.errors import ConfigError

__all__ = ["MAX_NODES", "check_config_files", "check_file"]

MAX_NODES = 100_000  # nodes after expanding aliases; real configs have hundreds
_DATA_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp")}


def _err(path: Path, mark, message: str) -> ConfigError:
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    return ConfigError(f"{where}: {' '.join(message.split())}")


def _count_nodes(path: Path, node, memo: dict[int, int], depth: int = 0) -> int:
    """Nodes under ``node`` with aliases expanded (memoised: linear in the file's size), each checked
    (plain data tags, no duplicate keys, not too deep)."""
    if id(node) in memo:
        return memo[id(node)]
    if depth > 200:
        raise _err(path, node.start_mark, "nesting deeper than 200 levels")
    if node.tag not in _DATA_TAGS:
        raise _err(path, node.start_mark, f"tag {node.tag.replace('tag:yaml.org,2002:', '!!')} is not allowed: "
                                          "config files are data, no code is executed from them")
    n = 1
    if isinstance(node, yaml.MappingNode):
        seen: dict = {}
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else None
            if key is not None and key in seen:
                raise _err(path, k.start_mark, f"duplicate key {key!r} (first at line {seen[key] + 1})")
            if key is not None:
                seen[key] = k.start_mark.line
            n += _count_nodes(path, k, memo, depth + 1) + _count_nodes(path, v, memo, depth + 1)
    elif isinstance(node, yaml.SequenceNode):
        n += sum(_count_nodes(path, v, memo, depth + 1) for v in node.value)
    memo[id(node)] = n
    if n > MAX_NODES:
        raise _err(path, node.start_mark, f"aliases here expand to more than {MAX_NODES:,} nodes (a 'billion "
                                          "laughs' file?); write the values out or use fewer nested aliases")
    return n


def check_file(path: Path) -> dict:
    """Raise ConfigError (one line: ``file:line:col: problem``) if ``path`` is not a well-formed
    mapping of plain YAML data; -> its contents (``{}`` for an empty file)."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise _err(path, None, f"cannot be read: {e}") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise _err(path, mark, f"{e.problem or e.context}" + (f" ({e.context})" if e.context and e.problem else "")
                   ) from None
    except yaml.YAMLError as e:
        raise _err(path, None, str(e)) from None
    finally:
        loader.dispose()
    if node is None:
        return {}  # an empty file is an empty config
    if not isinstance(node, yaml.MappingNode):
        kind = "a list" if isinstance(node, yaml.SequenceNode) else f"the value {node.value!r}"
        raise _err(path, node.start_mark, f"the file's root must be a mapping of fields, got {kind}")
    _count_nodes(Path(path), node, {})
    return loader.construct_document(node)  # safe: only plain data tags got past _count_nodes


def _defaults(data: dict) -> list[tuple[str, str]]:
    """(group, option) pairs a checked file's defaults list chooses (``- model: x``,
    ``- override /model: x``)."""
    out = []
    for item in data.get("defaults") or []:
        if isinstance(item, dict):
            for k, v in item.items():
                group = str(k).replace("override", "").strip().lstrip("/")
                if "/" not in group and isinstance(v, str):
                    out.append((group, v))
    return out


def check_config_files(choices: Sequence[tuple[str, str]], dirs: Sequence[Path],
                       config_name: str | None = "config") -> None:
    """Check every file that composing ``config_name`` with the ``(group, option)`` choices
    reads from ``dirs``: the primary config, the chosen options, the defaults they choose.
    ``config_name=None`` checks only the chosen options (and their defaults)."""
    chosen = {g for g, _ in choices}
    todo: list[tuple[str, str]] = sorted(set(choices))
    primary = next((d / f"{config_name}.yaml" for d in dirs if (d / f"{config_name}.yaml").is_file()), None) \
        if config_name else None
    if primary is not None:
        todo += [(g, o) for g, o in _defaults(check_file(primary)) if g not in chosen and o not in ("null", "_self_")]
    done: set[tuple[str, str]] = set()
    while todo:
        group, option = todo.pop(0)
        if (group, option) in done:
            continue
        done.add((group, option))
        f = config_file(group, option, dirs)
        if f is None:
            continue  # an unknown option is check_choices' (or Hydra's) to report
        todo += [(g, o) for g, o in _defaults(check_file(f)) if g not in chosen]
