"""The checks of an analysis against the torch module the build makes: every row's output shape
against a real forward pass, and the receptive field against a gradient measurement."""

import torch

from archsearch import analyze, build_model


def forward_shapes(model, spec) -> dict:
    """{YAML path: output shape (C, H, W)} of one forward pass of ``model`` in eval mode, for
    every module the build made for a row of the analysis."""
    shapes = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, p=p: shapes.__setitem__(p, tuple(o.shape[1:])))
             for p, m in model.modules_by_path().items()]
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, *spec.input_shape))
    for h in hooks:
        h.remove()
    assert out.shape == (2, spec.num_classes)
    return shapes


def measured_rf(spec) -> int:
    """Gradient-based RF: positive weights, backprop from the centre pixel of the last
    spatial map (before global pooling); extent of the non-zero input gradient. Max-pooling
    routes the gradient to one element of a window of equal inputs, so it is measured as
    average pooling of the same geometry (the same receptive field)."""
    m = build_model(spec).double().eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.Conv2d):
                mod.weight.fill_(0.1)
                if mod.bias is not None:
                    mod.bias.fill_(0.1)
    for parent in list(m.modules()):
        for name, child in parent.named_children():
            if isinstance(child, torch.nn.MaxPool2d):
                setattr(parent, name, torch.nn.AvgPool2d(child.kernel_size, child.stride, child.padding))
    body = m.features[: m.last_spatial + 1]
    r = analyze(spec)
    jump = max(l.jump for l in r.layers if l.spatial)
    size = r.rf + 8 * jump + 16  # large enough that the centre's RF is not clipped
    x = torch.ones(1, spec.in_channels, size, size, dtype=torch.double, requires_grad=True)
    y = body(x)
    h, w = y.shape[2] // 2, y.shape[3] // 2
    y[0, :, h, w].sum().backward()
    nz = (x.grad[0].abs().sum(0) > 0).nonzero()
    rows, cols = nz[:, 0], nz[:, 1]
    assert (rows.max() - rows.min()) == (cols.max() - cols.min())
    return int(rows.max() - rows.min() + 1)


def assert_agrees_with_torch(spec) -> None:
    """Parameters, every row's output shape and the receptive field, analysis against torch."""
    report, model = analyze(spec), build_model(spec)
    assert sum(p.numel() for p in model.parameters()) == report.params
    assert set(model.modules_by_path()) == {r.path for r in report.layers}
    assert forward_shapes(model, spec) == {r.path: r.out_shape for r in report.layers}
    assert measured_rf(spec) == report.rf
