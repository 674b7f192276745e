"""Writing a file whole or not at all, for every command that leaves one behind.

A run stopped while writing (Ctrl-C, a scheduler's SIGTERM, a full disk) leaves the file as it
was before, never half of it: the data goes to a hidden temporary file beside the target, which
is then renamed over it (a rename within one folder is atomic).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["put_back", "read_if_any", "write_whole"]


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


def read_if_any(path: Path) -> bytes | None:
    """The file's bytes, or None where there is no file: what :func:`put_back` restores."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def put_back(path: Path, before: bytes | None) -> None:
    """Undo a write that a later check refused: ``path`` as it was (``before``, from :func:`read_if_any`),
    gone where there was no file, so a replaced file is never lost to a refused one."""
    if before is None:
        path.unlink(missing_ok=True)
    else:
        write_whole(path, before)
