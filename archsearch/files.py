"""Writing a file whole or not at all, for every command that leaves one behind.

A run stopped while writing (Ctrl-C, a scheduler's SIGTERM, a full disk) leaves the file as it
was before, never half of it: the data goes to a hidden temporary file beside the target, which
is then renamed over it (a rename within one folder is atomic).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["write_whole"]


def write_whole(path: Path, data: str | bytes) -> Path:
    """``data`` (text is written as UTF-8) to ``path``, creating its folder; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
