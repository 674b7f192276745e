"""The one exception of the importer: a model it cannot bring in, said in one line."""

from __future__ import annotations

import os
import re

from archsearch.errors import ConfigError

__all__ = ["ImportProblem", "user_line"]

_FRAME = re.compile(r'File "([^"]+)", line (\d+)')
_OURS = (os.sep + "torch" + os.sep, os.sep + "archsearch" + os.sep + "importer" + os.sep, "<frozen ")


class ImportProblem(ConfigError):
    """The model cannot be written in the grammar (or cannot be loaded); ``str()`` is one line naming
    the module or operation and where in the user's file it is. The commands exit 2 on it."""


def user_line(stack: str | None) -> str:
    """``file:line`` of the innermost frame of a formatted stack that is the user's code (not torch's,
    not ours), or '' when there is none."""
    frames = [(f, n) for f, n in _FRAME.findall(stack or "") if not any(o in f for o in _OURS)]
    if not frames:
        return ""
    f, n = frames[-1]
    rel = os.path.relpath(f)
    return f"{f if rel.startswith('..') else rel}:{n}"

