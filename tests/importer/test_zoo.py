"""Every network of the zoo imported and proven the same network: (a) params, (b) shapes, (c) outputs
with the weights copied (fp64), (d) RF against the gradient on the user's module; and what each is
written as."""

from pathlib import Path

import pytest
import torch
import zoo

from archsearch import analyze, load_spec
from archsearch.importer import import_model

ZOO_FILE = Path(zoo.__file__)

# params the forward uses, archsearch's RF (checked by hand: e.g. Dilated 3 -> 7 (d2) -> 9 (s2) -> 9 + 8*2 = 25)
EXPECTED = {
    "BnAfterRelu": (5_296, 9), "BnBeforeRelu": (14_746, 13), "Functional": (5_482, 5), "Residual": (19_994, 13),
    "CatBranches": (2_714, 9), "DepthwisePointwise": (3_594, 7), "Dilated": (17_178, 25),
    "ReplicatePadding": (7_738, 26), "ChannelDropout": (8_026, 9), "ResNetMaxPool": (20_360, 32),
    "NeverCalled": (9_338, 7), "MixedOrders": (4_514, 11),
}


def _imported(cls):
    return import_model(f"{ZOO_FILE}:{cls.__name__}", cls.__name__.lower())


def _params_that_run(model: torch.nn.Module) -> int:
    """What torchsummary counts: the parameters of the modules a forward pass calls."""
    ran = set()
    hooks = [m.register_forward_hook(lambda mod, i, o: ran.add(mod)) for m in model.modules()
             if not list(m.children())]
    model.eval()
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    return sum(p.numel() for m in ran for p in m.parameters())


@pytest.mark.parametrize("cls", zoo.ZOO, ids=lambda c: c.__name__)
def test_zoo_network_is_imported_exactly(cls):
    imp = _imported(cls)
    params, rf = EXPECTED[cls.__name__]
    proof = imp.proof
    assert proof.params == imp.analysis.params == _params_that_run(cls()) == params  # (a)
    assert proof.shapes == len(imp.analysis.layers)  # (b) every row, blocks and their insides
    assert proof.max_diff <= 1e-5  # (c)
    assert proof.rf_measured == imp.analysis.rf == rf  # (d)


def test_zoo_has_the_styles_the_issue_lists():
    assert len(zoo.ZOO) >= 10


def _layers(cls) -> list:
    return _imported(cls).spec_dict["layers"]


def test_a_layer_never_called_is_reported_and_not_counted():
    proof = _imported(zoo.NeverCalled).proof
    assert proof.unused == {"spare": 16 * 16 * 9 + 16}
    assert proof.params == sum(p.numel() for p in zoo.NeverCalled().parameters()) - proof.unused["spare"]


def test_bn_after_relu_chooses_that_order_and_writes_padding():
    imp = _imported(zoo.BnAfterRelu)
    assert imp.spec_dict["order"] == ["op", "act", "bn", "dropout"]
    first, _, third = imp.spec_dict["layers"][:3]
    assert first == {"op": "conv", "out": 16, "k": 3, "s": 1, "p": 1, "d": 1, "act": "relu", "bn": True, "dropout": 0.1}
    assert third["p"] == 0  # PyTorch's default padding, written out
    assert imp.spec_dict["layers"][-2:] == [{"op": "gap"}, {"op": "log_softmax"}]  # AvgPool2d(14) on 14x14; view dropped


def test_residual_adds_become_residual_blocks():
    layers = _layers(zoo.Residual)
    first, second = layers[1], layers[2]
    assert first["op"] == "residual" and first["shortcut"] == "identity" and first["act"] == "relu"
    assert second["shortcut"] == [{"op": "conv", "out": 32, "k": 1, "s": 2, "p": 0, "d": 1, "bn": True}]
    assert second["act"] == "relu" and second["dropout"] == 0.1  # after the merge


def test_cat_becomes_branches_with_an_identity_path():
    block = _layers(zoo.CatBranches)[1]
    assert block["op"] == "branches" and block["merge"] == "concat"
    assert [len(p) for p in block["paths"]] == [1, 1, 0]
    assert block["paths"][1][0]["groups"] == 16 and block["paths"][1][0]["d"] == 3


def test_depthwise_pointwise_pairs():
    layers = _layers(zoo.DepthwisePointwise)
    assert layers[1]["op"] == "sepconv" and layers[1]["bn"] and layers[1]["act"] == "relu"
    dw, pw = layers[2], layers[3]  # a depthwise bias and BN/ReLU between: conv groups=C, then a 1x1 conv
    assert (dw["groups"], dw.get("bias"), dw["bn"], dw["act"]) == (32, True, True, "relu")
    assert (pw["k"], pw["act"]) == (1, "relu")
    assert imp_separable(zoo.DepthwisePointwise) == 2


def imp_separable(cls) -> int:
    return _imported(cls).analysis.n_separable


def test_padding_modes_and_local_pools():
    layers = _layers(zoo.ReplicatePadding)
    assert [l.get("padding_mode") for l in layers if l["op"] == "conv"][:3] == ["replicate", "reflect", "circular"]
    assert [l["op"] for l in layers][:4] == ["conv", "avgpool", "conv", "maxpool"]


def test_dropout2d_is_a_layer_of_its_own():
    layers = _layers(zoo.ChannelDropout)
    assert {"op": "dropout2d", "p": 0.1} in layers
    assert layers[-1] == {"op": "gap"}  # AvgPool2d(8) over the 8x8 map


def test_conv_maxpool_bn_relu_writes_standalone_bn_and_act():
    layers = _layers(zoo.ResNetMaxPool)
    assert [l["op"] for l in layers[1:5]] == ["conv", "maxpool", "bn", "act"]
    assert layers[5]["op"] == "residual"
    assert layers[-3:] == [{"op": "maxpool", "k": 4, "s": 4, "p": 0},
                           {"op": "linear", "out": 10, "bias": False}, {"op": "log_softmax"}]


def test_the_most_common_order_wins_and_the_rest_stands_alone():
    imp = _imported(zoo.MixedOrders)
    assert imp.spec_dict["order"] == ["op", "bn", "act", "dropout"]
    assert imp.spec_dict["layers"][3:5] == [{"op": "conv", "out": 16, "k": 3, "s": 1, "p": 1, "d": 1, "act": "relu"},
                                            {"op": "bn"}]


def test_the_reference_network_is_dilated_sep():
    """The seed assignment's network as an nn.Module, imported: dilated_sep's analysis, row by row."""
    imp = import_model(f"{ZOO_FILE}:EraS9", "era_s9")
    ref = analyze(load_spec("dilated_sep", overrides=["model.dropout=0.05"]))
    assert (imp.analysis.params, imp.analysis.rf, imp.analysis.macs) == (181_984, 61, ref.macs)
    rows = lambda a: [(r.path, r.op, r.out_shape, r.params, r.macs, r.rf, r.jump, r.layer.bn, r.layer.act,  # noqa: E731
                       r.layer.dropout) for r in a.layers]
    assert rows(imp.analysis) == rows(ref)
    assert imp.spec_dict["order"] == list(ref.spec.order)
    assert imp.proof.rf_measured == 61 and imp.proof.max_diff <= 1e-5
