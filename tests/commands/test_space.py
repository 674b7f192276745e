"""``python -m archsearch.space``: a sweep's search space checked against the budget, no training."""

from __future__ import annotations

import csv

import pytest

from archsearch.space import _fast_check, _slow_check, check_space, main


def run(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_smoke_space_enumerated_with_its_rejections(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "sweep=smoke")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == ("space of sweep smoke: 2 architecture dimensions, 6 architectures; "
                        "training knobs, not drawn: optim.lr")
    assert lines[1] == "all 6 checked: 4 (66.7%) within the budget"
    assert "  max_params: 2 (33.3%), e.g. params 220,128 exceed max_params 200,000 (by 20,128)" in lines
    assert "  model.wide: 32 100.0%, 48 100.0%, 72 0.0%" in lines  # the value that is never within the budget
    rows = list(csv.DictReader((tmp_path / "outputs" / "space" / "smoke.csv").open()))
    assert len(rows) == 6 and {r["model.wide"] for r in rows} == {"32", "48", "72"}
    over = [r for r in rows if r["model.wide"] == "72"]
    assert all(r["within_budget"] == "False" and r["params"] == "220128" and "exceed max_params" in r["reasons"]
               for r in over)
    assert not (tmp_path / "outputs" / "space" / "smoke.csv.part").exists()


def test_drawn_candidates_match_what_the_sweeper_composes(tmp_path, monkeypatch):
    """The fast path (values set in the composed model) gives what composing each candidate
    as the sweeper does gives: params, MACs, RF, and the same rejections."""
    monkeypatch.chdir(tmp_path)
    rep = check_space(["sweep=arch_residual"], samples=40, seed=3)
    assert rep.size == 82_944 and not rep.enumerated and len(rep.candidates) == 40
    assert len({tuple(c.values.values()) for c in rep.candidates}) == 40  # distinct architectures
    assert 0 < sum(c.ok for c in rep.candidates) < 40
    for c in rep.candidates[:12]:
        slow = _slow_check(["sweep=arch_residual"], c.values)
        assert (slow.params, slow.macs, slow.rf, slow.reasons) == (c.params, c.macs, c.rf, c.reasons)
    again = check_space(["sweep=arch_residual"], samples=40, seed=3)
    assert [c.values for c in again.candidates] == [c.values for c in rep.candidates]  # seeded


def test_command_line_dimensions_and_config_group_choices(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "sweep=smoke", "model.narrow=8,16")
    assert code == 0, err
    assert "3 architecture dimensions, 12 architectures" in out and "  model.narrow: 8 100.0%, 16 100.0%" in out
    assert "all 12 checked: 12 (100.0%) within the budget" in out  # a narrower stem brings wide=72 under 200k
    # a config-group dimension: each candidate composed (too_wide's own 72 is overridden by model.wide)
    code, out, err = run(capsys, "sweep=smoke", "model=choice(dilated_sep,too_wide)")
    assert code == 0, err
    assert "all 12 checked: 8 (66.7%) within the budget" in out


@pytest.mark.parametrize("args, message", [
    ((), "error: sweep: name a sweep whose space to check (sweep=arch_residual)\n"),
    (("sweep=smoke", "model.nope=1,2"), "error: hydra.sweeper.params.model.nope: no such key in the composed config "
                                        "(model 'dilated_sep'); '+model.nope' adds a new one\n"),
    (("sweep=smoke", "samples=0"), "error: samples: must be a whole number >= 1; got '0'\n"),
    (("sweep=nope",), "error: sweep: no config 'nope'; available: "),
])
def test_bad_input_is_one_line(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *args)
    assert code == 2 and out == "" and err.startswith(message) and err.count("\n") == 1
    assert not (tmp_path / "outputs").exists()


def test_an_interpolation_into_the_rest_of_the_config_is_resolved(tmp_path, monkeypatch):
    """A model whose width follows a training setting (``${trainer.batch_size}``, not a plain model
    reference) is resolved against the whole config, as composing it would."""
    base = {"model": {"name": "m", "in_channels": 3, "input_size": 32, "num_classes": 10,
                      "layers": [{"op": "conv", "out": "${trainer.batch_size}", "d": 2}, {"op": "sepconv", "out": 16},
                                 {"op": "conv", "out": 10, "k": 1}, {"op": "gap"}]},
            "budget": {"max_params": 200000, "min_rf": 1}}
    c = _fast_check(base, {"model.layers.1.out": 8}, {"trainer": {"batch_size": 12}, **base})
    assert c.ok and c.params > 0, c.reasons
