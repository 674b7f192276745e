"""The benchmark's parts: one registry, name -> the function that measures it, in the order the
parts run and their rows are written. A part reads the options (``key=value`` strings), appends
its table rows (measurement, baseline, archsearch, ratio) and its notes."""

from __future__ import annotations

from collections.abc import Callable

from archsearch.benchmark.memory import part_memory
from archsearch.benchmark.search_parts import part_concurrency, part_sweep, part_validator
from archsearch.benchmark.training_parts import part_breakdown, part_compile, part_train

__all__ = ["PARTS", "Part"]

Part = Callable[[dict, list, list], None]

PARTS: dict[str, Part] = {
    "train": part_train,
    "breakdown": part_breakdown,
    "compile": part_compile,
    "validator": part_validator,
    "sweep": part_sweep,
    "concurrency": part_concurrency,
    "memory": part_memory,
}
