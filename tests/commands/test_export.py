"""``python -m archsearch.export``: a sweep trial written as a model file of its own, on the real
smoke sweep and on studies built directly with Optuna; which trial ``trial=best`` picks; its user
mistakes."""

import pytest
from omegaconf import OmegaConf
from studies import FAST, add_trial, journal_study, run_main

from archsearch import fit
from archsearch.config.compose import compose_with_hydra, load_spec
from archsearch.export import best_trial
from archsearch.grammar.analysis import analyze


def test_export_writes_a_model_that_validates_and_trains(swept, tmp_path, monkeypatch, capsys, run_validate):
    monkeypatch.chdir(swept)
    st = journal_study(swept)
    t = next(t for t in st.trials if t.params.get("model.wide") == 48 and t.user_attrs["state"] == "COMPLETE")
    out = tmp_path / "myconf" / "model"
    code, stdout, err = run_main("export", capsys, "sweep=smoke", f"trial={t.number}", "name=mynet", f"out={out}")
    assert code == 0, err
    path = out / "mynet.yaml"
    text = path.read_text()
    assert stdout.startswith(f"wrote {path}\nmynet: trial {t.number} of study 'smoke', ")
    assert f"# Exported by python -m archsearch.export from trial {t.number} of study 'smoke'" in text
    assert "#   storage: journal:" in text and "dilated_sep.yaml" in text
    assert f"model settings applied: model.narrow=8 model.wide=48 model.dropout={t.params['model.dropout']}" in text
    assert f"# trained with: optim.lr={t.params['optim.lr']!r}" in text
    assert f"{t.user_attrs['model.params']:,} params, RF 61" in text
    node = OmegaConf.load(path)
    assert node.name == "mynet" and node.wide == 48 and node.narrow == 8
    assert OmegaConf.to_container(node)["layers"][1]["out"] == "${model.wide}"  # the knob reference is kept
    sp = f"hydra.searchpath=[file://{tmp_path / 'myconf'}]"
    assert run_validate("model=mynet", sp)[0] == 0
    res = fit(overrides=[sp, "model=mynet", "data=synthetic", "data.n_train=200", "data.val_size=50",
                         "data.n_test=50", "trainer.batch_size=50", "tracking=none", *FAST], out_dir=tmp_path / "run")
    assert res.epochs == 1 and res.params == t.user_attrs["model.params"]
    # an existing file is kept unless overwrite=true
    code, _, err = run_main("export", capsys, "sweep=smoke", f"trial={t.number}", "name=mynet", f"out={out}")
    assert code == 2 and err == f"error: overwrite: {path} exists; choose another name= or pass overwrite=true " \
                                "to replace it\n"
    code, _, err = run_main("export", capsys, "sweep=smoke", "trial=best", "name=mynet", f"out={out}",
                            "overwrite=true")
    assert code == 0, err


def test_export_keeps_knobs_and_replaces_nested_paths(tmp_path, monkeypatch, capsys, run_validate):
    """An arch_residual trial (built directly, no training): nested stage paths and knobs."""
    monkeypatch.chdir(tmp_path)
    st = journal_study(tmp_path, "arch_residual")
    params = {"model.w1": 24, "model.w2": 48, "model.w3": 64, "model.depth": 2,
              "model.stages.c1.1.body.0.body.0.op": "conv",
              "model.stages.c1.1.body.0.body.0.k": 5, "model.stages.c2.1.body.0.body.1.d": 3, "optim.lr": 0.1}
    add_trial(st, params, value=0.61)
    out = tmp_path / "conf" / "model"
    code, stdout, err = run_main("export", capsys, "sweep=arch_residual", "name=res_best", f"out={out}")
    assert code == 0, err
    text = (out / "res_best.yaml").read_text()
    model = OmegaConf.to_container(OmegaConf.load(out / "res_best.yaml"))
    assert model["w1"] == 24 and model["depth"] == 2 and model["name"] == "res_best"
    first = model["stages"]["c1"][1]["body"][0]["body"][0]
    assert first == {"op": "conv", "out": "${model.w1}", "k": 5}  # replaced at its path, the knob kept
    assert model["stages"]["c2"][1]["body"][0]["body"][1]["d"] == 3
    assert model["stages"]["c1"][1]["times"] == "${model.depth}"
    expected = analyze(load_spec("res_dilated", [f"{k}={v}" for k, v in params.items() if k.startswith("model.")]))
    assert f"# {expected.params:,} params, RF {expected.rf}," in text and "# trained with: optim.lr=0.1" in text
    assert "# proxy (the sweep's training): val_acc 0.6100" in text
    assert run_validate("model=res_best", f"hydra.searchpath=[file://{tmp_path / 'conf'}]")[0] == 0


def test_a_model_changed_at_export_does_not_carry_the_trials_figures_as_its_own(tmp_path, monkeypatch, capsys):
    """A model.* override on the export command makes another network: its header says the trial's
    proxy and full-recipe figures are the trial's network's, and no hint to re-pass the sweep's overrides."""
    monkeypatch.chdir(tmp_path)
    st = journal_study(tmp_path, "arch_residual")
    params = {"model.w1": 24, "model.w2": 48, "model.w3": 64, "model.depth": 2, "optim.lr": 0.1}
    swept = analyze(load_spec("res_dilated", [f"{k}={v}" for k, v in params.items() if k.startswith("model.")]))
    add_trial(st, params, value=0.61, **{"model.params": swept.params})
    st.set_user_attr("retrain.t0.s0", {"val_acc": 0.8, "test_acc_single_view": 0.79, "epochs": 20, "run_id": "r0"})
    out = tmp_path / "conf" / "model"
    code, stdout, err = run_main("export", capsys, "sweep=arch_residual", "name=res_thin", f"out={out}", "model.w3=32")
    assert code == 0, err
    text = (out / "res_thin.yaml").read_text()
    mine = analyze(load_spec("res_dilated", [*(f"{k}={v}" for k, v in params.items() if k.startswith("model.")),
                                             "model.w3=32"]))
    assert mine.params < swept.params and OmegaConf.load(out / "res_thin.yaml").w3 == 32
    lines = text.splitlines()
    changed = lines.index("# changed at export (this network was not trained by the sweep): model.w3=32")
    figures = lines.index(f"# the figures below are of trial 0's network ({swept.params:,} params), not of this file's:")
    assert changed < figures < next(i for i, x in enumerate(lines) if x.startswith("# full recipe (archsearch.retrain)"))
    assert f"# {mine.params:,} params, RF {mine.rf}," in text
    assert "changed at export (model.w3=32); trial 0's network" in stdout and "note:" not in stdout


def test_model_overrides_that_rebuild_the_swept_network_are_not_a_change(tmp_path, monkeypatch, capsys):
    """A study whose sweep command's model.w3=64 was not recorded: passing it again at export (as the
    note asks) rebuilds the trained network, so the header keeps the trial's figures as this file's."""
    monkeypatch.chdir(tmp_path)
    st = journal_study(tmp_path, "arch_residual")
    params = {"model.w1": 24, "model.w2": 48, "model.depth": 2, "optim.lr": 0.1}
    swept = analyze(load_spec("res_dilated", ["model.w1=24", "model.w2=48", "model.depth=2", "model.w3=64"]))
    add_trial(st, params, value=0.61, **{"model.params": swept.params, "model.rf": swept.rf, "model.macs": swept.macs})
    out = tmp_path / "conf" / "model"
    code, stdout, err = run_main("export", capsys, "sweep=arch_residual", "name=res_w64", f"out={out}", "model.w3=64")
    assert code == 0, err
    text = (out / "res_w64.yaml").read_text()
    assert f"# {swept.params:,} params, RF {swept.rf}," in text and "model.w3=64" in text
    assert "changed at export" not in text and "the figures below" not in text
    assert "changed at export" not in stdout and "note:" not in stdout


def test_export_holds_the_file_to_the_budget_its_sweep_file_set(tmp_path, monkeypatch, capsys):
    """arch_macs_100k caps params at 100,000 in its sweep file: a network changed at export past the cap
    (but under the default 200,000) is refused, exit 1, nothing written; a file it was to replace is kept."""
    monkeypatch.chdir(tmp_path)
    st = journal_study(tmp_path, "arch_macs_100k")
    add_trial(st, {"model.w1": 24, "model.w2": 32, "model.w3": 64, "model.depth": 2}, value=4.6e7)
    out = tmp_path / "conf" / "model"
    code, stdout, err = run_main("export", capsys, "sweep=arch_macs_100k", "name=small", f"out={out}")
    assert code == 0 and "within budget (params <= 100,000" in stdout, err
    code, stdout, err = run_main("export", capsys, "sweep=arch_macs_100k", "name=wider", f"out={out}", "model.w3=128")
    assert code == 1 and "exceed max_params 100,000" in err and not (out / "wider.yaml").exists(), err
    # overwrite=true with a network the validator refuses: the file it would have replaced is kept as it was
    before = (out / "small.yaml").read_text()
    code, stdout, err = run_main("export", capsys, "sweep=arch_macs_100k", "name=small", f"out={out}", "model.w3=128",
                                 "overwrite=true")
    assert code == 1 and "exceed max_params 100,000" in err, err
    assert (out / "small.yaml").read_text() == before and sorted(p.name for p in out.iterdir()) == ["small.yaml"]


def test_best_trial_prefers_the_full_recipe_when_retrained(tmp_path):
    st = journal_study(tmp_path)
    for i, v in enumerate((0.9, 0.8, 0.7)):
        add_trial(st, {"model.wide": 32, "optim.lr": 0.01 * (i + 1)}, value=v)
    assert best_trial(st).number == 0  # nothing retrained: the best proxy trial
    for n, seeds in ((0, (0.60, 0.62)), (2, (0.70, 0.64))):
        for s, v in enumerate(seeds):
            st.set_user_attr(f"retrain.t{n}.s{s}", {"val_acc": v, "test_acc_single_view": v})
    assert best_trial(st).number == 2  # mean full-recipe val 0.67 beats 0.61


def test_export_writes_a_trials_recipe_that_trains_with_its_values(swept, tmp_path, monkeypatch, capsys):
    """``what=recipe``: the trial's training settings as a recipe file of their own, which composes back
    to the trial's values; the folder is made, and no temporary file is left beside it."""
    monkeypatch.chdir(swept)
    st = journal_study(swept)
    t = next(t for t in st.trials if t.user_attrs["state"] == "COMPLETE")
    out = tmp_path / "myconf" / "recipe"
    code, stdout, err = run_main("export", capsys, "sweep=smoke", f"trial={t.number}", "what=recipe", "name=myrec",
                                 f"out={out}")
    assert code == 0, err
    path = out / "myrec.yaml"
    assert stdout.startswith(f"wrote {path}\nmyrec: the recipe of trial {t.number} of study 'smoke' ")
    text = path.read_text()
    assert text.startswith("# @package _global_\n") and f"what=recipe from trial {t.number} of study 'smoke'" in text
    assert sorted(p.name for p in out.iterdir()) == ["myrec.yaml"]
    cfg = compose_with_hydra("config", [f"hydra.searchpath=[file://{tmp_path / 'myconf'}]", "recipe=myrec"])
    assert cfg.optim.lr == pytest.approx(t.params["optim.lr"])


# ------------------------------------------------------------------ user mistakes: one line, exit 2
EXPORT_MISTAKES = [
    (["sweep=smoke"], "error: name: the new model's name, e.g. name=res_best"),
    (["sweep=smoke", "name=../x"], "error: name: the new model's name"),
    (["sweep=smoke", "name=x", "out=somewhere"], "error: out: must be a model/ folder of a config search path"),
    (["sweep=smoke", "name=x", "trial=first"], "error: trial: expected a trial number or best; got 'first'"),
    (["sweep=smoke", "name=x", "trial=1"], "error: trial: trial 1 of study 'smoke' is PRUNED, not COMPLETE"),
    (["sweep=smoke", "name=dilated_sep", "out=conf/model"], "error: name: a model 'dilated_sep' already exists"),
    (["sweep=smoke", "name=x", "overwrite=yes"], "error: overwrite: must be true or false; got 'yes'"),
    (["sweep=smoke", "name=x", "what=both"], "error: what: unknown value 'both'; choose one of model, recipe"),
    (["sweep=smoke", "name=x", "what=recipe", "out=conf/model"], "error: out: must be a recipe/ folder"),
]


@pytest.mark.parametrize("args,message", EXPORT_MISTAKES, ids=[" ".join(a) for a, _ in EXPORT_MISTAKES])
def test_export_mistakes_are_one_line(small_study, capsys, args, message):
    code, out, err = run_main("export", capsys, *args)
    assert code == 2 and err.startswith(message) and err.count("\n") == 1 and not out, err
    assert not list(small_study.rglob("x.yaml"))


def test_export_warns_when_the_rebuilt_model_is_not_the_swept_one(small_study, capsys):
    """A study whose sweep command's model.* overrides were not recorded: the params disagree."""
    st = journal_study(small_study, "old")
    add_trial(st, {"model.wide": 32, "optim.lr": 0.05}, **{"model.params": 12345})
    code, out, err = run_main("export", capsys, "sweep=smoke", "hydra.sweeper.study_name=old", "name=x",
                              f"out={small_study / 'conf' / 'model'}")
    assert code == 0, err
    assert out.rstrip().splitlines()[-1].startswith("note: trial 0 had 12,345 params in the sweep, this config has ")
