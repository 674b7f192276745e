"""The proof that a written spec is the user's network: (a) parameters, (b) every layer's output
shape, (c) the user's weights copied into ``build_model(spec)`` give the same outputs (fp64, eval
mode, random inputs), (d) the receptive field against a gradient measurement on the user's module."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from archsearch.grammar.analysis import Analysis
from archsearch.grammar.build import build_model
from archsearch.importer.emit import Emitted
from archsearch.importer.problems import ImportProblem
from archsearch.importer.trace import Traced

__all__ = ["Proof", "prove"]

TOLERANCE = 1e-5
_WEIGHTED = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)


@dataclass
class Proof:
    params: int  # (a) the parameters the forward uses, as torch counts them
    unused: dict  # module name -> its parameters, built but never called by forward
    shapes: int  # (b) layers whose output shape was compared
    max_diff: float  # (c) the largest |difference| of the outputs
    rf: int  # archsearch's receptive field
    rf_measured: int  # (d) the gradient's

    def summary(self) -> str:
        unused = ("; not counted, never called by forward: "
                  + ", ".join(f"{k} ({v:,})" for k, v in self.unused.items())) if self.unused else ""
        return (f"(a) params {self.params:,} = torch's{unused}; (b) {self.shapes} layer shapes = traced; "
                f"(c) outputs agree, max |diff| {self.max_diff:.1e} (fp64, eval); "
                f"(d) RF {self.rf} = gradient {self.rf_measured}")


def _used_params(model: nn.Module, traced: Traced) -> tuple[int, dict]:
    called = set(traced.called)
    used = sum(p.numel() for m in traced.called.values() for p in m.parameters())
    unused = {}
    for name, m in model.named_modules():
        own = sum(p.numel() for p in m.parameters(recurse=False))
        inside_called = any(name == c or name.startswith(c + ".") for c in called)
        if own and not inside_called:
            unused[name] = own
    return used, unused


def _fail(what: str, detail: str):
    raise ImportProblem(f"the imported spec is not the same network ({what}): {detail}; please report this model")


def _check_shapes(emitted: Emitted, analysis: Analysis) -> int:
    rows = {r.path: r for r in analysis.layers}
    for path, shape in emitted.shapes.items():
        got = rows[path].out_shape
        want = tuple(shape) if len(shape) == 3 else (*shape, 1, 1)
        if tuple(got) != want:
            _fail("(b) shapes", f"{path} ({emitted.labels[path]}) gives {got}, traced {want}")
    return len(emitted.shapes)


def _randomize_bn(model: nn.Module, g: torch.Generator) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g, dtype=m.running_mean.dtype))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g, dtype=m.running_var.dtype) + 0.5)
                m.weight.copy_(torch.randn(m.weight.shape, generator=g, dtype=m.weight.dtype))
                m.bias.copy_(torch.randn(m.bias.shape, generator=g, dtype=m.bias.dtype))


def _copy_weights(model: nn.Module, user: nn.Module, net: nn.Module, emitted: Emitted) -> None:
    """The weights of ``user`` (a copy of ``model``) into the built spec ``net``, path by path."""
    by_path = net.modules_by_path()
    names = {id(m): n for n, m in model.named_modules()}
    copies = dict(user.named_modules())
    with torch.no_grad():
        for path, src in emitted.modules.items():
            if src is None:  # a block: its paths' layers carry the weights
                continue
            dst = [m for m in by_path[path].modules() if isinstance(m, _WEIGHTED)]
            src = [copies[names[id(m)]] for m in src]
            if len(dst) != len(src):
                _fail("(c) weights", f"{path} builds {len(dst)} weighted modules, the user's has {len(src)}")
            for d, s in zip(dst, src):
                for key, value in s.state_dict().items():
                    target = d.state_dict()[key]
                    target.copy_(value.reshape(target.shape))


def _check_outputs(model: nn.Module, spec, emitted: Emitted, shape: tuple) -> float:
    g = torch.Generator().manual_seed(0)
    user = copy.deepcopy(model).double().eval()
    _randomize_bn(user, g)
    net = build_model(spec).double().eval()
    _copy_weights(model, user, net, emitted)
    x = torch.randn(4, *shape, generator=g, dtype=torch.double)
    with torch.no_grad():
        want, got = user(x), net(x)
    want = want.reshape(want.shape[0], -1)
    if want.shape != got.shape:
        _fail("(c) outputs", f"the spec's model outputs {tuple(got.shape)}, the user's {tuple(want.shape)}")
    diff = float((want - got).abs().max())
    if not diff <= TOLERANCE:
        _fail("(c) outputs", f"max |difference| {diff:.3g} > {TOLERANCE:g}")
    return diff


def _last_spatial(traced: Traced) -> str:
    """The last spatial map before global pooling: the input of the first global pooling (any pooling
    whose output is 1x1) or linear."""
    for p in traced.prims:
        if p.kind in ("gap", "linear") or (p.kind in ("maxpool", "avgpool") and p.shape[1:] == (1, 1)):
            return p.inputs[0]
    return traced.output


_POOL_ARGS = ((1, "kernel_size", None), (2, "stride", None), (3, "padding", 0))


def _arg(n: fx.Node, i: int, key: str, default):
    return n.args[i] if len(n.args) > i else n.kwargs.get(key, default)


def measure_rf(model: nn.Module, traced: Traced, rf: int, jump: int) -> int:
    """Gradient-based RF on the user's module: positive weights, max pooling measured as average pooling
    of the same geometry, all-ones input large enough not to clip; the extent of the non-zero gradient
    of the centre pixel of the last spatial map before global pooling."""
    target = _last_spatial(traced)
    gm = copy.deepcopy(traced.gm).double().eval()
    with torch.no_grad():
        for m in gm.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.fill_(0.1)
                if m.bias is not None:
                    m.bias.fill_(0.1)
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()
    g = fx.Graph()
    env: dict = {}
    for n in gm.graph.nodes:
        if n.op == "output":
            break
        if n.target is F.max_pool2d:  # the same geometry, averaged
            env[n] = g.call_function(F.avg_pool2d, (env[n.args[0]], *(_arg(n, i, key, default) for i, key, default in
                                                                      _POOL_ARGS)))
        else:
            env[n] = g.node_copy(n, lambda a: env[a])
        if n.name == target:
            break
    g.output(env[next(n for n in gm.graph.nodes if n.name == target)])
    sub = fx.GraphModule(gm, g)
    for name, m in list(sub.named_modules()):
        if isinstance(m, nn.MaxPool2d):
            sub.set_submodule(name, nn.AvgPool2d(m.kernel_size, m.stride, m.padding))
    size = rf + 8 * jump + 16
    x = torch.ones(1, traced.input_shape[0], size, size, dtype=torch.double, requires_grad=True)
    y = sub(x)
    y[0, :, y.shape[2] // 2, y.shape[3] // 2].sum().backward()
    nz = (x.grad[0].abs().sum(0) > 0).nonzero()
    return int(max(nz[:, 0].max() - nz[:, 0].min(), nz[:, 1].max() - nz[:, 1].min()) + 1)


def prove(model: nn.Module, traced: Traced, emitted: Emitted, analysis: Analysis) -> Proof:
    used, unused = _used_params(model, traced)
    if used != analysis.params:
        _fail("(a) params", f"archsearch counts {analysis.params:,}, the modules forward calls hold {used:,}")
    shapes = _check_shapes(emitted, analysis)
    diff = _check_outputs(model, analysis.spec, emitted, traced.input_shape)
    jump = max(r.jump for r in analysis.layers if r.spatial)
    measured = measure_rf(model, traced, analysis.rf, jump)
    if measured != analysis.rf:
        _fail("(d) receptive field", f"archsearch says {analysis.rf}, the gradient on the user's module {measured}")
    return Proof(used, unused, shapes, diff, analysis.rf, measured)
