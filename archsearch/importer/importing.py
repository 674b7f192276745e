"""SOURCE -> a model spec proven to be the same network: load, trace, write the graph as layers,
analyse, prove (:mod:`archsearch.importer.checks`)."""

from __future__ import annotations

from dataclasses import dataclass

from archsearch.errors import SpecError
from archsearch.grammar.analysis import Analysis, analyze
from archsearch.grammar.spec import parse_spec
from archsearch.importer.checks import Proof, prove
from archsearch.importer.emit import Emitted, emit
from archsearch.importer.problems import ImportProblem
from archsearch.importer.source import load_model
from archsearch.importer.structure import series_parallel
from archsearch.importer.trace import trace

__all__ = ["Imported", "import_model"]


@dataclass
class Imported:
    source: str
    label: str  # the class or factory's name
    init: dict
    spec_dict: dict  # the model spec, plain data (what the YAML holds)
    emitted: Emitted
    analysis: Analysis
    proof: Proof


def import_model(source: str, name: str, init: dict | None = None, in_channels: int | None = None,
                 input_size: int = 32) -> Imported:
    """Import SOURCE as the spec ``name``; ImportProblem (one line) if the grammar cannot write it or a
    check fails."""
    init = dict(init or {})
    if in_channels is None and isinstance(init.get("in_channels"), int):  # the model's own argument says it
        in_channels = init["in_channels"]
    if isinstance(init.get("input_size"), int) and input_size == 32:
        input_size = init["input_size"]
    model, label = load_model(source, init)
    traced = trace(model, label, in_channels, input_size)
    emitted = emit(series_parallel(traced))
    out = next(p for p in traced.prims if p.name == traced.output).shape
    c, size = traced.input_shape[0], traced.input_shape[1]
    spec_dict = {"name": name, "in_channels": c, "input_size": size, "num_classes": int(out[0]),
                 "order": list(emitted.order), "layers": emitted.layers}
    try:
        analysis = analyze(parse_spec(spec_dict))
    except SpecError as e:
        raise ImportProblem(f"{label}: the grammar cannot hold it yet: {e}") from None
    return Imported(source, label, init, spec_dict, emitted, analysis, prove(model, traced, emitted, analysis))
