"""Hand-computed analysis cases: shapes, params, MACs, receptive field, jump."""

import subprocess
import sys

import pytest

from archsearch import analyze, parse_spec
from archsearch.errors import SpecError


def spec(layers, size=32, cin=3):
    """A model of ``layers`` closed by gap; num_classes = the last layer's channels."""
    outs = [l["out"] for l in layers if "out" in l]
    return parse_spec({"name": "t", "in_channels": cin, "input_size": size,
                       "num_classes": outs[-1] if outs else cin, "layers": [*layers, {"op": "gap"}]})


# (layers, input size, expected per-layer (out HxW, rf, jump) for the spatial layers)
CASES = [
    ("3x3 keeps size", [{"op": "conv", "out": 8}], 32, [(32, 3, 1)]),
    ("3x3 dilation 2 pads 2", [{"op": "conv", "out": 8, "d": 2}], 32, [(32, 5, 1)]),
    ("3x3 dilation 3", [{"op": "conv", "out": 8, "d": 3}], 32, [(32, 7, 1)]),
    ("3x3 stride 2 pad 1", [{"op": "conv", "out": 8, "s": 2}], 32, [(16, 3, 2)]),
    ("3x3 stride 2 no pad", [{"op": "conv", "out": 8, "s": 2, "p": 0}], 32, [(15, 3, 2)]),
    ("1x1 s2 p1 (reference transition)", [{"op": "conv", "out": 8, "k": 1, "s": 2, "p": 1}], 32, [(17, 1, 2)]),
    ("1x1 s2 p0 on 17", [{"op": "conv", "out": 8, "k": 1, "s": 2, "p": 0}], 17, [(9, 1, 2)]),
    ("RF grows with jump",
     [{"op": "conv", "out": 8}, {"op": "conv", "out": 8, "s": 2}, {"op": "conv", "out": 8},
      {"op": "conv", "out": 8, "d": 2}],
     32, [(32, 3, 1), (16, 5, 2), (16, 9, 2), (16, 17, 2)]),
    ("sepconv 3x3 d2 s2", [{"op": "sepconv", "out": 8, "d": 2, "s": 2}], 32, [(16, 5, 2)]),
    ("maxpool 2", [{"op": "conv", "out": 8}, {"op": "maxpool"}], 32, [(32, 3, 1), (16, 4, 2)]),
]


@pytest.mark.parametrize("name,layers,size,expected", CASES, ids=[c[0] for c in CASES])
def test_shapes_rf_jump(name, layers, size, expected):
    r = analyze(spec(layers, size=size))
    got = [(l.out_shape[1], l.rf, l.jump) for l in r.layers if l.spatial]
    assert got == expected
    assert r.rf == expected[-1][1]  # model RF = last spatial map before GAP


# (layer, input channels, params, MACs at 8x8 output)
PARAM_CASES = [
    ("conv 3x3 no bias", {"op": "conv", "out": 16, "k": 3}, 8, 8 * 16 * 9, 8 * 16 * 9 * 64),
    ("conv 1x1 bias", {"op": "conv", "out": 16, "k": 1, "bias": True}, 8, 8 * 16 + 16, 8 * 16 * 64),
    ("conv groups 4", {"op": "conv", "out": 16, "k": 3, "groups": 4}, 8, 2 * 9 * 16, 2 * 9 * 16 * 64),
    ("conv + bn", {"op": "conv", "out": 16, "bn": True}, 8, 8 * 16 * 9 + 32, 8 * 16 * 9 * 64),
    ("sepconv 3x3", {"op": "sepconv", "out": 16}, 8, 8 * 9 + 8 * 16, (8 * 9 + 8 * 16) * 64),
    ("sepconv 1x1 (reference)", {"op": "sepconv", "out": 64, "k": 1}, 32, 32 + 32 * 64, (32 + 32 * 64) * 64),
]


@pytest.mark.parametrize("name,layer,cin,params,macs", PARAM_CASES, ids=[c[0] for c in PARAM_CASES])
def test_params_and_macs(name, layer, cin, params, macs):
    r = analyze(spec([layer], size=8, cin=cin))
    assert (r.layers[0].params, r.layers[0].macs) == (params, macs)


def test_linear_after_gap_and_rf_ignores_gap():
    s = parse_spec({"name": "t", "in_channels": 3, "input_size": 8, "num_classes": 10, "layers": [
        {"op": "conv", "out": 16}, {"op": "gap"}, {"op": "linear", "out": 10}]})
    r = analyze(s)
    assert r.params == 3 * 16 * 9 + 16 * 10 + 10
    assert r.rf == 3  # not "the whole image" because of GAP
    assert r.out_shape == (10, 1, 1)


def test_size_collapse_names_the_layer():
    with pytest.raises(SpecError, match=r"model\.layers\[2\]: spatial size collapses to 0x0"):
        analyze(spec([{"op": "conv", "out": 8, "s": 2}, {"op": "conv", "out": 8, "s": 2},
                      {"op": "conv", "out": 8, "k": 5, "p": 0}], size=8))


def test_groups_must_divide_channels():
    with pytest.raises(SpecError, match=r"model\.layers\[0\]\.groups: groups 2 does not divide the input channels 3"):
        analyze(spec([{"op": "conv", "out": 8, "groups": 2}]))


def test_analysis_does_not_import_torch():
    code = ("import sys, archsearch; from archsearch import analyze, parse_spec;"
            "analyze(parse_spec({'in_channels':3,'input_size':8,'num_classes':4,'layers':[{'op':'conv','out':4},{'op':'gap'}]}));"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
