"""Writing a file whole or not at all, for every command and run that leaves one behind.

A run stopped while writing (Ctrl-C, a scheduler's SIGTERM, a full disk) leaves the file as it
was before, never half of it: the data goes to a hidden temporary file beside the target, named
for the writing process (trials writing one file at once do not share it), which is then renamed
over it (a rename within one folder is atomic) and is removed if anything fails before.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["put_back", "read_if_any", "write_whole"]


def write_whole(path: Path, data: str | bytes | Callable[[Path], object]) -> Path:
    """``data`` to ``path``, creating its folder; returns ``path``. ``data`` is text (written as UTF-8),
    bytes, or a function that writes the file it is given (``lambda f: torch.save(obj, f)``); the
    temporary name ends in the target's suffix, as writers such as ``np.savez`` expect."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    try:
        if callable(data):
            data(tmp)
        else:
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
