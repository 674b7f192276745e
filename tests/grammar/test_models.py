"""Every shipped model: the analysis agrees with the built torch module."""

import pytest
import torch
from torchcheck import forward_shapes, measured_rf

from archsearch import analyze, build_model, load_spec
from archsearch.config.paths import available

MODELS = available("model")


def test_shipped_models():
    assert {"dilated_sep", "strided", "compact", "too_wide", "resnet_s10", "res_dilated", "branchy"} <= set(MODELS)


@pytest.fixture(scope="module", params=MODELS)
def built(request):
    spec = load_spec(request.param)
    return spec, analyze(spec), build_model(spec)


def test_param_count_matches_torch(built):
    spec, report, model = built
    assert sum(p.numel() for p in model.parameters()) == report.params


def test_every_layer_shape_matches(built):
    """Every row of the analysis (layers inside blocks, and the blocks' merged maps) against
    the output of the module the build made for that YAML path."""
    spec, report, model = built
    assert set(model.modules_by_path()) == {r.path for r in report.layers}
    assert forward_shapes(model, spec) == {r.path: r.out_shape for r in report.layers}


def test_receptive_field_matches_gradient_measurement(built):
    spec, report, model = built
    assert measured_rf(spec) == report.rf


def test_dilated_sep_reproduces_the_reference_summary():
    """../shared/seed/ERA-V1-S9-README.md's model summary, row by row (leaf modules)."""
    ref = [
        ("Conv2d", (32, 32, 32), 864), ("ReLU", (32, 32, 32), 0), ("Dropout", (32, 32, 32), 0),
        ("BatchNorm2d", (32, 32, 32), 64),
        ("Conv2d", (64, 32, 32), 18432), ("ReLU", (64, 32, 32), 0), ("Dropout", (64, 32, 32), 0),
        ("BatchNorm2d", (64, 32, 32), 128),
        ("Conv2d", (64, 32, 32), 36864), ("ReLU", (64, 32, 32), 0), ("Dropout", (64, 32, 32), 0),
        ("BatchNorm2d", (64, 32, 32), 128),
        ("Conv2d", (32, 17, 17), 2080), ("ReLU", (32, 17, 17), 0), ("BatchNorm2d", (32, 17, 17), 64),
        ("Conv2d", (64, 17, 17), 18432), ("ReLU", (64, 17, 17), 0), ("Dropout", (64, 17, 17), 0),
        ("BatchNorm2d", (64, 17, 17), 128),
        ("Conv2d", (64, 17, 17), 36864), ("ReLU", (64, 17, 17), 0), ("Dropout", (64, 17, 17), 0),
        ("BatchNorm2d", (64, 17, 17), 128),
        ("Conv2d", (32, 9, 9), 2080), ("ReLU", (32, 9, 9), 0), ("BatchNorm2d", (32, 9, 9), 64),
        ("Conv2d", (32, 9, 9), 32), ("Conv2d", (64, 9, 9), 2048), ("ReLU", (64, 9, 9), 0),
        ("BatchNorm2d", (64, 9, 9), 128),
        ("Conv2d", (64, 9, 9), 36864), ("ReLU", (64, 9, 9), 0), ("Dropout", (64, 9, 9), 0),
        ("BatchNorm2d", (64, 9, 9), 128),
        ("Conv2d", (32, 6, 6), 2080), ("ReLU", (32, 6, 6), 0), ("BatchNorm2d", (32, 6, 6), 64),
        ("Conv2d", (64, 6, 6), 18432), ("ReLU", (64, 6, 6), 0), ("Dropout", (64, 6, 6), 0),
        ("BatchNorm2d", (64, 6, 6), 128),
        ("Conv2d", (10, 6, 6), 5760),
        ("AvgPool2d", (10, 1, 1), 0),  # the reference's AvgPool2d(6) == our global average pool
    ]
    # the reference has Dropout after its 3x3 convs; our recipe sets the rate to 0 (module omitted)
    spec = load_spec("dilated_sep", overrides=["model.dropout=0.05"])
    model = build_model(spec).eval()
    rows = []

    def hook(mod, i, o):
        name = "AvgPool2d" if isinstance(mod, torch.nn.AdaptiveAvgPool2d) else type(mod).__name__
        rows.append((name, tuple(o.shape[1:]), sum(p.numel() for p in mod.parameters())))

    leaves = [m for m in model.modules() if not list(m.children())]
    hs = [m.register_forward_hook(hook) for m in leaves]
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    for h in hs:
        h.remove()
    assert rows == ref
    assert analyze(spec).params == 181_984


def test_dilated_sep_facts():
    r = analyze(load_spec("dilated_sep"))
    assert r.params == 181_984
    assert r.rf == 61
    assert sorted({l.out_shape[1] for l in r.layers[:-1]}, reverse=True) == [32, 17, 9, 6]


def test_override_changes_the_analysis():
    assert analyze(load_spec("dilated_sep", overrides=["model.layers.2.d=1"])).rf == 59
    assert analyze(load_spec("dilated_sep", overrides=["model.wide=72"])).params == 220_128
