"""The benchmark's parts: one registry, name -> the function that measures it, in the order the
parts run and their rows are written. A part reads the options (``key=value`` strings), appends
its table rows (measurement, baseline, archsearch, ratio) and its notes."""

from __future__ import annotations

from collections.abc import Callable

from archsearch.benchmark.device_parts import part_slots, part_system_metrics, part_workers
from archsearch.benchmark.layer_parts import part_layers
from archsearch.benchmark.memory import part_memory
from archsearch.benchmark.search_parts import part_concurrency, part_sweep, part_validator
from archsearch.benchmark.training_parts import (
    part_breakdown,
    part_compile,
    part_kernels,
    part_probe,
    part_train,
)

__all__ = ["GPU_PARTS", "PARTS", "Part"]

Part = Callable[[dict, list, list], None]

PARTS: dict[str, Part] = {
    "train": part_train,
    "breakdown": part_breakdown,
    "compile": part_compile,
    "probe": part_probe,
    "kernels": part_kernels,
    "layers": part_layers,
    "validator": part_validator,
    "sweep": part_sweep,
    "concurrency": part_concurrency,
    "memory": part_memory,
    "workers": part_workers,
    "slots": part_slots,
    "system_metrics": part_system_metrics,
}

# what `python -m archsearch.bench device=cuda` runs by default: the GPU check (docs/benchmarks.md)
GPU_PARTS = ("train", "breakdown", "compile", "kernels", "workers", "slots", "system_metrics")
