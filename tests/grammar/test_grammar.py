"""Model grammar v2: residual and branches blocks, repeats and named stages, analysed without
building (and checked against the built module in test_models for the shipped models)."""

import json

import pytest
import torch

from archsearch import analyze, build_model, check, load_budget, load_spec, parse_spec
from archsearch.errors import SpecError


def spec(layers, **model):
    return parse_spec({"name": "t", "in_channels": 3, "input_size": 32, "num_classes": 10,
                       "layer_defaults": {"bn": True, "act": "relu"}, "layers": layers, **model})


HEAD = [{"op": "gap"}, {"op": "linear", "out": 10}]


def rows(r):
    return {row.path: row for row in r.layers}


def test_residual_adds_paths_and_takes_the_larger_receptive_field():
    s = spec([{"op": "conv", "out": 16},
              {"op": "residual", "body": [{"op": "conv", "out": 16}, {"op": "conv", "out": 16, "d": 2}]},
              {"op": "residual", "body": [{"op": "conv", "out": 32, "s": 2}],
               "shortcut": [{"op": "conv", "out": 32, "k": 1, "s": 2, "p": 0}]}, *HEAD])
    r = analyze(s)
    by = rows(r)
    res = by["model.layers[1]"]
    assert res.is_block and res.out_shape == (16, 32, 32) and res.rf == 3 + 2 + 4  # max(body, identity)
    assert res.params == by["model.layers[1].body[0]"].params + by["model.layers[1].body[1]"].params
    assert by["model.layers[2]"].out_shape == (32, 16, 16) and by["model.layers[2]"].jump == 2
    assert by["model.layers[2].shortcut[0]"].rf == 9  # a 1x1 shortcut leaves the RF; the body's 3x3 wins
    assert by["model.layers[2]"].rf == 11
    assert r.params == sum(p.numel() for p in build_model(s).parameters())
    assert r.n_dilated == 1  # the rule looks inside blocks


def test_branches_concat_sums_channels_and_add_needs_equal_shapes():
    paths = [[{"op": "conv", "out": 8, "k": 3}], [{"op": "conv", "out": 8, "k": 7, "d": 3}], []]
    s = spec([{"op": "conv", "out": 8}, {"op": "branches", "merge": "concat", "paths": paths}, *HEAD])
    r = analyze(s)
    b = rows(r)["model.layers[1]"]
    assert b.out_shape == (24, 32, 32) and b.rf == 3 + 18  # the dilated 7x7 path
    assert build_model(s)(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(SpecError, match=r"^model.layers\[1\]: add needs the same C, H and W on every path: "
                                        r"paths\[0\] gives 8x32x32, paths\[1\] gives 16x32x32$"):
        analyze(spec([{"op": "conv", "out": 8}, {"op": "branches", "merge": "add", "paths": [
            [{"op": "conv", "out": 8}], [{"op": "conv", "out": 16}]]}, *HEAD]))
    with pytest.raises(SpecError, match=r"concat needs the same H and W on every path: paths\[0\] gives 8x32x32, "
                                        r"paths\[1\] gives 8x16x16"):
        analyze(spec([{"op": "conv", "out": 8}, {"op": "branches", "paths": [
            [{"op": "conv", "out": 8}], [{"op": "conv", "out": 8, "s": 2}]]}, *HEAD]))


def test_repeat_expands_with_its_own_weights_and_paths():
    body = [{"op": "residual", "body": [{"op": "sepconv", "out": 16}]}]
    s = spec([{"op": "conv", "out": 16}, {"op": "repeat", "times": 3, "body": body}, *HEAD])
    r = analyze(s)
    assert [l.path for l in s.layers][:4] == ["model.layers[0]", "model.layers[1](1).body[0]",
                                              "model.layers[1](2).body[0]", "model.layers[1](3).body[0]"]
    assert r.rf == 3 + 3 * 2
    one = analyze(spec([{"op": "conv", "out": 16}, {"op": "repeat", "times": 1, "body": body}, *HEAD]))
    assert r.params - one.params == 2 * (one.params - analyze(spec([{"op": "conv", "out": 16}, *HEAD])).params)
    assert r.params == sum(p.numel() for p in build_model(s).parameters())


def test_named_stages_and_overrides_reach_inside_blocks():
    s = load_spec("res_dilated", ["model.stages.c1.1.body.0.body.1.d=3", "model.depth=2"])
    r = analyze(s)
    by = rows(r)
    assert by["stages.c1[1](1).body[0].body[1]".join(["model.", ""])].layer.args["d"] == 3
    assert "model.stages.c3[1](2).body[0]" in by  # depth 2: two residual blocks per stage
    assert r.params > analyze(load_spec("res_dilated")).params


@pytest.mark.parametrize("layers,message", [
    ([{"op": "residual"}], r"model.layers\[0\].body: missing; a residual block adds body\(x\) to shortcut\(x\)"),
    ([{"op": "branches", "merge": "add"}], r"model.layers\[0\].paths: missing"),
    ([{"op": "branches", "merge": "mul", "paths": [[], []]}],
     r"model.layers\[0\].merge: unknown merge 'mul'; choose one of add, concat"),
    ([{"op": "repeat", "times": 0, "body": [{"op": "conv", "out": 8}]}], r"model.layers\[0\].times: must be an int >= 1"),
    ([{"op": "residual", "body": [{"op": "conv", "out": 8}], "shortcut": "skip"}],
     r"model.layers\[0\].shortcut: unknown shortcut 'skip'; use identity or a list of layers"),
    ([{"op": "residual", "body": [{"op": "conv", "out": 8}], "kernel": 3}], r"model.layers\[0\].kernel: unknown field"),
    ([{"op": "residual", "body": [{"op": "gap"}]}], r"model.layers\[0\]: gap, linear and global pooling cannot sit inside a block"),
])
def test_block_mistakes_are_one_line_with_the_path(layers, message):
    with pytest.raises(SpecError, match=message) as e:
        analyze(spec(layers + HEAD))
    assert "\n" not in str(e.value)


def test_nesting_and_expansion_have_sane_limits():
    deep = [{"op": "conv", "out": 8}]
    for _ in range(9):
        deep = [{"op": "residual", "body": deep}]
    with pytest.raises(SpecError, match=r"blocks nest more than 8 deep here"):
        spec(deep + HEAD)
    big = [{"op": "repeat", "times": 100, "body": [{"op": "repeat", "times": 100, "body": [{"op": "conv", "out": 8}]}]}]
    with pytest.raises(SpecError, match=r"^model.layers\[0\]: the model expands to more than 2000 layers here"):
        spec(big + HEAD)


def test_the_budget_finds_a_maxpool_inside_a_block_and_resnet_s10_is_rejected():
    s = spec([{"op": "conv", "out": 8}, {"op": "residual", "body": [{"op": "conv", "out": 8, "d": 2}, {"op": "maxpool", "k": 3, "s": 1, "p": 1}]},
              {"op": "sepconv", "out": 10}, {"op": "gap"}])
    msgs = [v.message for v in check(analyze(s), load_budget())]
    assert any("1 maxpool layer(s)" in m for m in msgs)
    msgs = [v.message for v in check(analyze(load_spec("resnet_s10")), load_budget())]
    assert any("params 6,573,130 exceed max_params 200,000" in m for m in msgs)
    assert any("4 maxpool layer(s)" in m for m in msgs)
    for name in ("res_dilated", "branchy"):
        assert not check(analyze(load_spec(name)), load_budget()), name
    assert analyze(load_spec("branchy")).params < 100_000


def test_validate_prints_nested_rows_and_json_nests(run_validate):
    code, out, _ = run_validate("model=branchy")
    assert code == 0
    lines = out.splitlines()
    block = next(i for i, l in enumerate(lines) if l.startswith("stages.b1[0] ") and "residual" in l)
    assert lines[block + 1].startswith("  stages.b1[0].body[0] ") and "branches" in lines[block + 1]
    assert lines[block + 2].startswith("    stages.b1[0].body[0].paths[0][0] ")
    code, out, _ = run_validate("model=branchy", "format=json")
    d = json.loads(out)
    res = next(l for l in d["layers"] if l["op"] == "residual")
    assert res["merge"] == "add" and res["paths"][1] == []  # identity shortcut
    assert [p[0]["op"] for p in res["paths"][0][0]["paths"]] == ["conv", "conv", "conv"]
