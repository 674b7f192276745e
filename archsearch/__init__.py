"""archsearch: declarative small-CNN specs, a receptive-field/parameter-budget validator,
training on CIFAR-10 with albumentations, Optuna sweeps and MLflow tracking.

    from archsearch import load_spec, analyze, build_model
    spec = load_spec("dilated_sep", overrides=["model.layers.2.d=1"])
    analysis = analyze(spec)    # analysis.params, analysis.rf, analysis.macs, analysis.out_shape, analysis.layers
    model = build_model(spec)   # torch.nn.Module (torch is imported only here)
    result = fit(overrides=["model=compact", "trainer.epochs=5"])   # a training run, as the CLI's
"""

from archsearch.config.compose import load_budget, load_spec, spec_from_cfg
from archsearch.errors import SpecError
from archsearch.grammar.analysis import Analysis, LayerAnalysis, analyze, receptive_field
from archsearch.grammar.budget import Budget, Violation, check, parse_budget
from archsearch.grammar.layers import BlockSpec, LayerSpec
from archsearch.grammar.spec import ModelSpec, parse_spec, spec_hash

__all__ = [
    "BlockSpec", "Budget", "LayerAnalysis", "LayerSpec", "ModelSpec", "Analysis", "SpecError", "Violation",
    "analyze", "build_model", "check", "load_budget", "load_spec", "parse_budget", "parse_spec",
    "fit", "receptive_field", "spec_from_cfg", "spec_hash",
]


def build_model(spec: ModelSpec):
    """Build the ``torch.nn.Module`` for a spec."""
    from archsearch.grammar.build import build_model as _build  # torch only when a model is built

    return _build(spec)


def fit(cfg=None, overrides=(), out_dir=None, **kw):
    """Train as ``python -m archsearch.train`` does (same MLflow run) -> TrainResult;
    see :func:`archsearch.training.job.fit`."""
    from archsearch.training.job import fit as _fit  # the training stack only when a run trains

    return _fit(cfg, overrides, out_dir, **kw)
