"""Trace a user's ``nn.Module`` with torch.fx and read its graph as a list of :class:`Prim`: one
entry per operation the grammar knows (conv, bn, an activation, dropout, pooling, linear, add,
concat, log_softmax), each with its settings, its tensor inputs, its traced output shape and the
modules that hold its weights. Anything else is an :class:`ImportProblem` naming the module or
operation and the line of the user's ``forward`` that calls it."""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from archsearch.importer.operations import convert_function, convert_method, convert_module
from archsearch.importer.problems import ImportProblem, user_line

__all__ = ["Prim", "Traced", "trace"]


@dataclass
class Prim:
    """One operation of the traced network."""

    name: str  # the fx node's name
    kind: str  # conv bn act dropout dropout2d maxpool avgpool gap linear add cat log_softmax | input
    args: dict
    inputs: list[str]  # the Prims whose outputs it reads, in order
    shape: tuple  # output shape without the batch: (C, H, W), or (F,) once flattened
    label: str  # what the user wrote: a module's name and class, or a function
    where: str  # file:line in the user's forward ('' if unknown)
    modules: list = field(default_factory=list)  # the modules holding its weights (conv, bn, linear)


@dataclass
class Traced:
    gm: fx.GraphModule
    prims: list[Prim]  # topological order; the first is the input
    output: str  # the Prim the forward returns
    called: dict  # module name -> module, every module the forward calls
    input_shape: tuple


def _where(node: fx.Node) -> str:
    return user_line(node.meta.get("stack_trace"))


def _fx_trace(model: nn.Module, label: str) -> fx.GraphModule:
    tracer = fx.Tracer()
    tracer.record_stack_traces = True
    try:
        graph = tracer.trace(model)
    except Exception as e:  # fx's own errors (data-dependent control flow, ...) and the user's code's
        where = user_line("".join(traceback.format_tb(e.__traceback__)))
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ImportProblem(f"{label}.forward{f' ({where})' if where else ''}: torch.fx cannot trace it: "
                            f"{msg} (a data-dependent branch or loop cannot be written as a layer list)") from None
    return fx.GraphModule(tracer.root, graph)


def _first_conv_channels(gm: fx.GraphModule) -> int | None:
    for n in gm.graph.nodes:
        if n.op == "call_module" and isinstance(gm.get_submodule(n.target), nn.Conv2d):
            return gm.get_submodule(n.target).in_channels
    return None


def _propagate(gm: fx.GraphModule, shape: tuple, label: str) -> None:
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(torch.randn(1, *shape))
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ImportProblem(f"{label}: running it on a 1x{'x'.join(map(str, shape))} input failed: {msg} "
                            f"(set in_channels= / input_size= if the model expects another input)") from None


def _is_tensor(n) -> bool:
    return isinstance(n, fx.Node) and "tensor_meta" in n.meta and hasattr(n.meta["tensor_meta"], "shape")


def trace(model: nn.Module, label: str, in_channels: int | None = None, input_size: int = 32) -> Traced:
    """The model's graph as Prims (the model is put in eval mode)."""
    model.eval()
    gm = _fx_trace(model, label)
    c = in_channels or _first_conv_channels(gm)
    if c is None:
        raise ImportProblem(f"{label}: no Conv2d found to tell the input channels; pass in_channels=")
    _propagate(gm, (c, input_size, input_size), label)
    prims: list[Prim] = []
    alias: dict[str, str] = {}  # pass-through nodes (identity, flatten of a 1x1 map) -> what they pass on
    called: dict[str, nn.Module] = {}
    output = None
    for n in gm.graph.nodes:
        if n.op == "output":
            out = n.args[0]
            if not _is_tensor(out):
                raise ImportProblem(f"{label}.forward: returns {type(out).__name__}, not one tensor of class scores")
            output = alias.get(out.name, out.name)
            continue
        if not _is_tensor(n) and n.op != "call_module":
            continue  # sizes and other plain values: read only by the operations that use them
        p = _prim(gm, n, alias, called, label)
        if p is None:
            continue
        if p.kind in ("identity", "flatten"):
            alias[n.name] = p.inputs[0]
        else:
            prims.append(p)
    return Traced(gm, prims, output, called, (c, input_size, input_size))


def _prim(gm: fx.GraphModule, n: fx.Node, alias: dict, called: dict, label: str) -> Prim | None:
    shape = tuple(n.meta["tensor_meta"].shape[1:]) if _is_tensor(n) else ()  # () a module returning no tensor
    where = _where(n)
    if n.op == "placeholder":
        return Prim(n.name, "input", {}, [], shape, "input", "")
    inputs = [alias.get(a.name, a.name) for a in n.all_input_nodes if _is_tensor(a)]
    in_shapes = [tuple(a.meta["tensor_meta"].shape[1:]) for a in n.all_input_nodes if _is_tensor(a)]
    if n.op == "get_attr":
        raise ImportProblem(f"{n.target} ({where or label}): a tensor the forward uses directly, not through a "
                            "module; the grammar writes only layers")
    if n.op == "call_module":
        mod = gm.get_submodule(n.target)
        if n.target in called:
            raise ImportProblem(f"{n.target} ({type(mod).__name__}, {where}): called twice in forward (shared "
                                "weights); each layer of a spec has its own")
        called[n.target] = mod
        what = f"{n.target} ({type(mod).__name__})"
        kind, args = convert_module(mod, in_shapes[0] if in_shapes else (), shape, what, where)
        mods = [mod] if kind in ("conv", "bn", "linear") else []
    else:
        fn = n.target
        what = getattr(fn, "__name__", str(fn)) if n.op == "call_function" else f".{fn}()"
        if n.op == "call_function":
            kind, args = convert_function(fn, n, in_shapes, shape, what, where)
        else:
            kind, args = convert_method(fn, n, in_shapes, shape, what, where)
        mods = []
    if kind in ("add", "cat") and len(inputs) < 2:
        raise ImportProblem(f"{what} ({where}): combines a tensor with a constant; the grammar merges paths only")
    return Prim(n.name, kind, args, inputs, shape, what, where, mods)

