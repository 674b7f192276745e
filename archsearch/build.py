"""Spec -> ``torch.nn.Module``. The spec is validated (analysed) first, never in forward."""

from __future__ import annotations

from torch import nn

from .analysis import analyze
from .ops import ACTIVATIONS, OPS
from .spec import ModelSpec

__all__ = ["Net", "build_model"]


class Net(nn.Module):
    """``features`` (one ``nn.Sequential`` per spec layer, named ``layer{i}``) then flatten."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        report = analyze(spec)  # raises SpecError before any module exists
        self.spec = spec
        blocks = []
        for layer, lr in zip(spec.layers, report.layers):
            cin, cout = lr.in_shape[0], lr.out_shape[0]
            parts = {"op": OPS[layer.op].build(dict(layer.args), cin)}
            parts["bn"] = [nn.BatchNorm2d(cout)] if layer.bn else []
            act = ACTIVATIONS[layer.act]
            parts["act"] = [getattr(nn, act)()] if act else []
            parts["dropout"] = [nn.Dropout(layer.dropout)] if layer.dropout > 0 else []
            mods = [m for key in spec.order for m in parts[key]]
            blocks.append(nn.Sequential(*mods))
        self.features = nn.Sequential(*blocks)
        # index of the last layer whose output is still a spatial map (for RF checks)
        self.last_spatial = max((i for i, lr in enumerate(report.layers) if lr.spatial), default=-1)

    def forward(self, x):
        return self.features(x).flatten(1)


def build_model(spec: ModelSpec) -> Net:
    return Net(spec)
