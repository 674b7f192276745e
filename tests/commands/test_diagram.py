"""The picture of a network: ``validate format=svg|png|html`` for every shipped model, and the
diagram a training run logs."""

import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
from PIL import Image

from archsearch import analyze, load_budget, load_spec
from archsearch.config.paths import available
from archsearch.training.plots import write_diagram

MODELS = available("model")


def _texts(svg: str) -> list[str]:
    root = ET.fromstring(svg)
    return [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text")]


@pytest.mark.parametrize("name", MODELS)
def test_every_shipped_model_draws_with_its_shapes_and_rf(name, run_validate, tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHSEARCH_BASE", str(tmp_path))
    code, out, err = run_validate(f"model={name}", "format=svg")
    a = analyze(load_spec(name))
    path = tmp_path / "outputs" / "diagrams" / f"{name}.svg"
    assert out.splitlines()[0] == str(path) and err == ""
    assert code == (0 if "OK" in out else 1)
    texts = _texts(path.read_text())
    assert any(t.startswith(f"{name}: {a.params:,} params") for t in texts)
    assert f"RF {a.rf} (the model's)" in texts  # the receptive field chart ends at the model's RF
    assert "min RF 44" in texts and "image 32" in texts
    boxes = [t for t in texts if t.startswith("-> ")]
    assert len(boxes) == len(a.layers)  # one output shape per layer and per block
    assert all(f"-> {'x'.join(map(str, r.out_shape))}" in " ".join(boxes) for r in a.layers)


def test_blocks_draw_their_paths_and_named_stages(run_validate, tmp_path):
    code, out, _ = run_validate("model=branchy", "format=svg", f"out={tmp_path}/b.svg")
    texts = _texts((tmp_path / "b.svg").read_text())
    assert {"residual (add)", "branches (concat)", "identity", "paths[2]"} <= set(texts)
    assert {"stem", "b1", "down", "b2", "head"} <= set(texts)  # the stages, named as in the YAML
    assert "conv 3x3 p1 · bn,relu" in texts  # the extras in branchy's order (op, bn, act, dropout), as validate
    run_validate("model=resnet_s10", f"out={tmp_path}/r.svg")
    texts = _texts((tmp_path / "r.svg").read_text())
    assert {"prep", "layer1", "layer2", "layer3", "head"} <= set(texts)
    assert "REJECTED: 5 budget violation(s)" in texts
    assert any(t.startswith("- params 6,573,130 exceed max_params") for t in texts)


def test_png_and_html(run_validate, tmp_path):
    code, out, _ = run_validate("model=res_dilated", f"out={tmp_path}/m.png")
    assert code == 0 and out.splitlines()[0] == f"{tmp_path}/m.png"
    with Image.open(tmp_path / "m.png") as im:
        assert im.format == "PNG" and im.width > 600 and im.height > 1000
    run_validate("model=res_dilated", "format=html", f"out={tmp_path}/")
    html = (tmp_path / "res_dilated.html").read_text()
    assert "<svg" in html and "total: 148,938 params" in html  # the picture and the table


@pytest.mark.parametrize("args, message", [
    (("format=pdf",), "format: unknown format 'pdf'; choose one of table, json, svg, png, html"),
    (("format=svg", "out=x.png"), "out: 'x.png' ends in .png but format=svg"),
    (("format=json", "out=x.svg"), "out: a picture's file; give format=svg|png|html"),
])
def test_bad_arguments_are_one_line_and_write_nothing(args, message, run_validate, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ARCHSEARCH_BASE", str(tmp_path))
    code, out, err = run_validate("model=dilated_sep", *args)
    assert code == 2 and out == "" and err.startswith(f"error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "outputs").exists() and not list(tmp_path.glob("x.*"))


def test_unwritable_out_is_one_line(run_validate, tmp_path):
    (tmp_path / "file").write_text("")
    code, _, err = run_validate("model=dilated_sep", f"out={tmp_path}/file/x.svg")
    assert code == 2 and re.match(r"error: out: cannot write .*x\.svg: ", err)


def test_a_picture_loads_no_matplotlib_torch_or_mlflow(tmp_path):
    code = ("import sys; from archsearch.validate import main; main(['model=branchy', 'format=png', "
            f"'out={tmp_path}/b.png']); print(sorted(m for m in ('matplotlib', 'torch', 'mlflow', 'optuna') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("[]")


def test_a_run_logs_the_same_picture(tmp_path):
    a, b = analyze(load_spec("res_dilated")), load_budget()
    path = write_diagram(tmp_path, a, b)
    assert path == tmp_path / "model_diagram.svg"
    assert f"RF {a.rf} (the model's)" in _texts(path.read_text())
