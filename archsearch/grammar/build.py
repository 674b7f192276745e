"""Spec -> ``torch.nn.Module``. The spec is validated (analysed) first, never in forward."""

from __future__ import annotations

import torch
from torch import nn

from archsearch.grammar.analysis import LayerAnalysis, analyze
from archsearch.grammar.ops import ACTIVATIONS, OPS
from archsearch.grammar.spec import ModelSpec

__all__ = ["Merge", "Net", "build_model"]


class Merge(nn.Module):
    """Parallel paths from one input (an empty path is the identity), added or concatenated,
    then an optional activation and an optional Dropout: a residual block or a branches block."""

    def __init__(self, paths: list[nn.Module], merge: str, act: nn.Module | None, dropout: float = 0.0):
        super().__init__()
        self.paths = nn.ModuleList(paths)
        self.merge = merge
        self.act = act if act is not None else nn.Identity()
        # no module at 0: a block without dropout keeps the module tree (and state_dict) it always had
        self.drop = nn.Dropout(dropout) if dropout > 0 else None

    def forward(self, x):
        outs = [p(x) for p in self.paths]
        if self.merge == "add":
            y = outs[0]
            for o in outs[1:]:
                y = y + o
        else:
            y = torch.cat(outs, dim=1)
        y = self.act(y)
        return self.drop(y) if self.drop is not None else y


def _act(name: str) -> nn.Module | None:
    cls = ACTIVATIONS[name]
    return getattr(nn, cls)() if cls else None


class Net(nn.Module):
    """``features`` (one module per entry of the model's layer list: an ``nn.Sequential`` of op
    and extras for a layer, a :class:`Merge` for a block) then flatten. ``modules_by_path``
    maps every analysis row's YAML path to the module that computes it."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        analysis = analyze(spec)  # raises SpecError before any module exists
        self.spec = spec
        self._by_path: dict[str, nn.Module] = {}
        self.features = nn.Sequential(*[self._node(r) for r in analysis.top])
        # index of the last top-level entry whose output is still a spatial map (for RF checks)
        self.last_spatial = max((i for i, lr in enumerate(analysis.top) if lr.spatial), default=-1)

    def _node(self, row: LayerAnalysis) -> nn.Module:
        if row.is_block:
            paths = [nn.Sequential(*[self._node(r) for r in rows]) for rows in row.children]
            mod: nn.Module = Merge(paths, row.layer.merge, _act(row.layer.act), row.layer.dropout)
        else:
            layer, cout = row.layer, row.out_shape[0]
            parts = {"op": OPS[layer.op].build(dict(layer.args), row.in_shape[0]),
                     "bn": [nn.BatchNorm2d(cout)] if layer.bn else [],
                     "act": [a] if (a := _act(layer.act)) else [],
                     "dropout": [nn.Dropout(layer.dropout)] if layer.dropout > 0 else []}
            mod = nn.Sequential(*[m for key in self.spec.order for m in parts[key]])
        self._by_path[row.path] = mod
        return mod

    def modules_by_path(self) -> dict[str, nn.Module]:
        return dict(self._by_path)

    def forward(self, x):
        return self.features(x).flatten(1)


def build_model(spec: ModelSpec) -> Net:
    return Net(spec)
