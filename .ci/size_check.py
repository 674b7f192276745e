"""No module over 400 lines, no function over 60 lines (tests included): the rooms stay small
enough to read. Run by `make lint`; prints each offender as path:line name (length)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MAX_MODULE, MAX_FUNCTION = 400, 60
ROOTS = ("archsearch", "hydra_plugins", "tests")


def offenders(root: Path) -> list[str]:
    out = []
    for d in ROOTS:
        for f in sorted((root / d).rglob("*.py")):
            text = f.read_text()
            n = len(text.splitlines())
            rel = f.relative_to(root)
            if n > MAX_MODULE:
                out.append(f"{rel}: module of {n} lines (at most {MAX_MODULE})")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
                    length = node.end_lineno - start + 1
                    if length > MAX_FUNCTION:
                        out.append(f"{rel}:{node.lineno}: function {node.name} of {length} lines (at most {MAX_FUNCTION})")
    return out


if __name__ == "__main__":
    bad = offenders(Path(__file__).resolve().parents[1])
    print("\n".join(bad) or f"sizes OK: modules <= {MAX_MODULE} lines, functions <= {MAX_FUNCTION} lines")
    sys.exit(1 if bad else 0)
