"""The forms that networks written in PyTorch need (what the nn.Module importer writes): padding
modes, standalone bn / act / dropout / dropout2d / avgpool / log_softmax layers, dropout after a
block's merge, depthwise-separable convs written as two convs, pools to 1x1 as global pooling.
Each is checked against the built torch module: parameters, every row's shape, the RF."""

import json

import pytest
import torch
from torchcheck import assert_agrees_with_torch

from archsearch import analyze, build_model, check, load_budget, load_spec, parse_spec, spec_hash
from archsearch.errors import SpecError


def spec(layers, size=32, classes=10, **model):
    return parse_spec({"name": "t", "in_channels": 3, "input_size": size, "num_classes": classes,
                       "layers": layers, **model})


def conv(out, **kw):
    return {"op": "conv", "out": out, **kw}


# an S10-style network as people write it: conv -> maxpool -> bn -> relu, dropout after the residual add
S10 = [conv(16), {"op": "bn"}, {"op": "act", "act": "relu"},
       conv(32), {"op": "maxpool"}, {"op": "bn"}, {"op": "act", "act": "relu"}, {"op": "dropout2d", "p": 0.1},
       {"op": "residual", "act": "relu", "dropout": 0.1,
        "body": [conv(32, padding_mode="replicate"), {"op": "bn"}, {"op": "act", "act": "gelu"}, conv(32, d=2)]},
       conv(10, k=1), {"op": "avgpool", "k": 2}, {"op": "bn"}, {"op": "dropout", "p": 0.2},
       {"op": "avgpool", "k": 8}, {"op": "log_softmax"}]
# a depthwise conv with a bias and bn/act before its pointwise, an avgpool head with a linear classifier
SEPARABLE = [conv(16, padding_mode="reflect"), conv(16, groups=16, bias=True, d=2), {"op": "bn"},
             {"op": "act", "act": "silu"}, conv(32, k=1), {"op": "avgpool", "k": 3, "s": 2, "p": 1},
             {"op": "sepconv", "out": 32, "padding_mode": "circular"}, {"op": "gap"}, {"op": "bn"},
             {"op": "linear", "out": 10}, {"op": "dropout", "p": 0.0}, {"op": "log_softmax"}]
MODES = [[conv(8, padding_mode=m, k=5), {"op": "sepconv", "out": 10, "padding_mode": m, "s": 2}, {"op": "gap"}]
         for m in ("zeros", "reflect", "replicate", "circular")]


@pytest.mark.parametrize("layers", [S10, SEPARABLE, *MODES], ids=["s10", "separable", "zeros", "reflect",
                                                                  "replicate", "circular"])
def test_the_analysis_agrees_with_torch(layers):
    assert_agrees_with_torch(spec(layers))


def test_standalone_layers_build_what_they_say():
    s = spec(S10)
    by = build_model(s).modules_by_path()
    assert isinstance(by["model.layers[1]"][0], torch.nn.BatchNorm2d) and by["model.layers[1]"][0].num_features == 16
    assert isinstance(by["model.layers[7]"][0], torch.nn.Dropout2d) and by["model.layers[7]"][0].p == 0.1
    assert by["model.layers[8].body[0]"][0].padding_mode == "replicate"
    assert isinstance(by["model.layers[8].body[2]"][0], torch.nn.GELU)
    merge = by["model.layers[8]"]
    assert isinstance(merge.act, torch.nn.ReLU) and isinstance(merge.drop, torch.nn.Dropout) and merge.drop.p == 0.1
    assert isinstance(by["model.layers[10]"][0], torch.nn.AvgPool2d)
    model = build_model(s).eval()
    with torch.no_grad():
        out = model(torch.randn(3, 3, 32, 32))
    assert torch.allclose(out.exp().sum(1), torch.ones(3, dtype=out.dtype))  # log-probabilities over the classes


def test_a_pool_to_1x1_is_global_pooling():
    r = analyze(spec(S10))
    by = {row.path: row for row in r.layers}
    pool = by["model.layers[13]"]  # AvgPool2d(8) on an 8x8 map
    assert pool.out_shape == (10, 1, 1) and not pool.spatial
    assert r.rf == by["model.layers[12]"].rf == 20  # 3, 5, maxpool 6, body 10 and 18 (jump 2), avgpool(2) 20
    # resnet_s10's MaxPool2d(4) on its 4x4 map: the RF is its input map's (the gradient says 64 too)
    assert analyze(load_spec("resnet_s10")).rf == 64


def test_require_gap_takes_a_global_avgpool_but_not_a_global_maxpool():
    budget = load_budget()
    ok = [v.rule for v in check(analyze(spec(S10)), budget)]
    assert "require_gap" not in ok
    maxed = spec([*S10[:-2], {"op": "maxpool", "k": 8}, {"op": "log_softmax"}])
    msgs = {v.rule: v.message for v in check(analyze(maxed), budget)}
    assert msgs["require_gap"] == ("no global average pooling (gap, or an avgpool whose output is 1x1; a global "
                                   "maxpool does not count) before the classifier; require_gap needs one")


@pytest.mark.parametrize("between,counts", [
    ([], 1),
    ([{"op": "bn"}, {"op": "act", "act": "relu"}, {"op": "dropout", "p": 0.1}], 1),
    ([conv(16, k=3)], 0),  # a 3x3 conv in between: the depthwise conv's output is not what the 1x1 takes
    ([{"op": "maxpool", "k": 3, "s": 1, "p": 1}], 0),
])
def test_a_depthwise_conv_then_a_1x1_conv_is_separable(between, counts):
    s = spec([conv(16), conv(16, groups=16, k=3, bias=True), *between, conv(24, k=1), {"op": "gap"},
              {"op": "linear", "out": 10}])
    r = analyze(s)
    assert r.n_separable == counts
    msgs = [v.message for v in check(r, load_budget())]
    lacks = "0 depthwise-separable layers (sepconv, or conv groups=C then a 1x1 conv); require_separable needs at least 1"
    assert (lacks in msgs) == (counts == 0)


def test_a_depthwise_conv_alone_or_across_a_block_merge():
    alone = spec([conv(16), conv(16, groups=16), {"op": "gap"}, {"op": "linear", "out": 10}])
    assert analyze(alone).n_separable == 0
    # parallel depthwise paths concatenated, then one pointwise conv (branchy's blocks): one separable layer
    paths = [[conv(16, groups=16)], [conv(16, groups=16, k=5)]]
    mixed = spec([conv(16), {"op": "branches", "paths": paths}, conv(32, k=1), {"op": "gap"}, {"op": "linear", "out": 10}])
    assert analyze(mixed).n_separable == 1
    assert analyze(load_spec("branchy")).n_separable >= 3


def test_the_details_column_follows_the_models_order(run_validate):
    code, out, _ = run_validate("model=compact")
    assert code == 0 and "3x3 p1 | bn,relu,drop0.02" in out and "relu,drop0.02,bn" not in out
    _, out, _ = run_validate("model=dilated_sep", "format=json")
    assert json.loads(out)["layers"][0]["desc"] == "3x3 p1 | relu,bn"  # its order: op, act, dropout, bn
    code, out, _ = run_validate("model=dilated_sep", "model.order=[op,bn,act,dropout]", "model.dropout=0.05")
    assert "3x3 p1 | bn,relu,drop0.05" in out


def test_new_fields_at_their_defaults_leave_the_spec_hash_alone():
    plain = spec([conv(10), {"op": "residual", "body": [conv(10)]}, {"op": "gap"}])
    spelled = spec([conv(10, padding_mode="zeros"), {"op": "residual", "body": [conv(10)], "dropout": 0}, {"op": "gap"}])
    assert spec_hash(plain) == spec_hash(spelled)
    assert spec_hash(spec([conv(10, padding_mode="reflect"), {"op": "gap"}])) != spec_hash(spec([conv(10), {"op": "gap"}]))
    relu, gelu = ({"op": "act", "act": a} for a in ("relu", "gelu"))
    assert spec_hash(spec([conv(10), relu, {"op": "gap"}])) != spec_hash(spec([conv(10), gelu, {"op": "gap"}]))


HEAD = [{"op": "gap"}, {"op": "linear", "out": 10}]
BAD = [
    ([conv(8, padding_mode="mirror")], r"^model\.layers\[0\]\.padding_mode: unknown padding_mode 'mirror'; "
                                       r"choose one of zeros, reflect, replicate, circular$"),
    ([{"op": "act", "act": "none"}], r"^model\.layers\[0\]\.act: 'none' would be an empty layer; choose one of relu, "
                                     r"relu6, leaky_relu, gelu, silu, mish$"),
    ([{"op": "act", "act": "tanh"}], r"^model\.layers\[0\]\.act: unknown activation 'tanh'; choose one of relu,"),
    ([{"op": "act"}], r"^model\.layers\[0\]\.act: missing \(required by op 'act'\)$"),
    ([{"op": "dropout", "p": 1.0}], r"^model\.layers\[0\]\.p: must be a number in \[0, 1\), got 1\.0$"),
    ([{"op": "dropout2d"}], r"^model\.layers\[0\]\.p: missing \(required by op 'dropout2d'\)$"),
    ([{"op": "dropout", "p": 0.1, "inplace": True}], r"^model\.layers\[0\]\.inplace: unknown field for op 'dropout'; "
                                                    r"valid fields: p$"),
    ([{"op": "bn", "eps": 0.1}], r"^model\.layers\[0\]\.eps: unknown field for op 'bn'; bn takes no fields$"),
    ([{"op": "gap", "k": 3}], r"^model\.layers\[0\]\.k: unknown field for op 'gap'; gap takes no fields$"),
    ([{"op": "avgpool", "k": 2, "p": 2}], r"^model\.layers\[0\]\.p: padding 2 is more than half the kernel 2"),
    ([conv(8), {"op": "log_softmax"}], r"^model\.layers\[1\]: log_softmax needs a \(C, 1, 1\) input, got 8x32x32; "
                                       r"it goes at the end of the head, after gap or linear$"),
    ([{"op": "residual", "body": [conv(8)], "dropout": 1.5}], r"^model\.layers\[0\]\.dropout: must be a number in"),
    ([conv(8, k=1, p=40, padding_mode="reflect")], r"^model\.layers\[0\]\.padding_mode: reflect padding 40 needs a "
                                                   r"larger input than 32x32"),
    ([conv(32), {"op": "residual", "body": [conv(64, s=2)]}],
     r"^model\.layers\[1\]: add needs the same C, H and W on every path: body gives 64x16x16, shortcut gives "
     r"32x32x32; use shortcut: \[\{op: conv, out: 64, k: 1, s: 2\}\]$"),
    ([conv(32), {"op": "residual", "body": [conv(64)]}],
     r"gives 32x32x32; use shortcut: \[\{op: conv, out: 64, k: 1\}\]$"),
    ([{"op": "sepcov"}], r"^model\.layers\[0\]\.op: unknown op 'sepcov'; choose one of conv, sepconv, maxpool, gap, "
                         r"linear, residual, branches, repeat, avgpool, bn, act, dropout, dropout2d, log_softmax$"),
]


@pytest.mark.parametrize("layers,message", BAD, ids=[m[:40] for _, m in BAD])
def test_mistakes_are_one_line_naming_the_path_and_the_choices(layers, message):
    with pytest.raises(SpecError, match=message) as e:
        analyze(spec(layers + HEAD))
    assert "\n" not in str(e.value)


def test_the_suggested_shortcut_fixes_the_block():
    fixed = spec([conv(32), {"op": "residual", "body": [conv(64, s=2)], "shortcut": [conv(64, k=1, s=2, p=0)]}, *HEAD])
    assert analyze(fixed).out_shape == (10, 1, 1)
