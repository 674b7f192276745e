"""``python -m archsearch.import``: the file it writes, what it refuses (one line, exit 2, nothing
written), and ``python -m archsearch.validate SOURCE``."""

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import unsupported_nets
import yaml
import zoo

from archsearch.validate import run as validate_run

ZOO = Path(zoo.__file__)
BAD = Path(unsupported_nets.__file__)
command = importlib.import_module("archsearch.import")  # `import` is a keyword: the module is named by string


@pytest.fixture
def run_import(capsys):
    def _run(*args):
        code = command.main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return _run


def test_import_writes_a_model_that_validates_and_says_where_it_came_from(run_import, tmp_path):
    out = tmp_path / "model"
    code, text, err = run_import(f"{ZOO}:Residual", "name=res_imp", f"out={out}")
    assert code == 0, err
    path = out / "res_imp.yaml"
    assert f"wrote {path}" in text and "(d) RF 13 = gradient 13" in text
    written = path.read_text()
    header = [line for line in written.splitlines() if line.startswith("#")]
    assert f"{ZOO}:Residual" in header[0] and "(a) params 19,994 = torch's" in written and "max |diff|" in written
    assert yaml.safe_load(written)["layers"][1]["op"] == "residual"
    code, table = validate_run(["model=res_imp", f"hydra.searchpath=[file://{tmp_path}]"])
    assert "total: 19,994 params" in table and "receptive field 13" in table
    assert [p.name for p in out.iterdir()] == ["res_imp.yaml"]  # no temporary file left behind


def test_one_dropout_rate_becomes_the_models_dropout_knob(run_import, tmp_path):
    """EraS9's convs share one dropout rate: the file holds it as ``model.dropout`` (as dilated_sep does),
    so a sweep over model.dropout (sweep=hparams) turns it, and 0 leaves no Dropout module."""
    out = tmp_path / "model"
    assert run_import(f"{ZOO}:EraS9", "name=s9", f"out={out}")[0] == 0
    written = yaml.safe_load((out / "s9.yaml").read_text())
    assert written["dropout"] == 0.05 and written["layers"][0]["dropout"] == "${model.dropout}"
    sp = f"hydra.searchpath=[file://{tmp_path}]"
    assert "drop0.05" in validate_run(["model=s9", sp])[1]
    code, table = validate_run(["model=s9", sp, "model.dropout=0"])
    assert code == 0 and "drop0" not in table and "total: 181,984 params" in table


def test_init_arguments_are_yaml_scalars_and_a_factory_works(run_import, tmp_path):
    code, text, err = run_import(f"{BAD}:factory", "name=fac", f"out={tmp_path / 'model'}", "init.width=12",
                                 "init.act=gelu")
    assert code == 0, err
    written = (tmp_path / "model" / "fac.yaml").read_text()
    assert "init.width=12 init.act=gelu" in written
    assert yaml.safe_load(written)["layers"][0] == {"op": "conv", "out": 12, "k": 3, "s": 1, "p": 1, "d": 1,
                                                    "bias": True, "act": "gelu"}


def test_the_input_comes_from_init_or_the_options(run_import, tmp_path):
    out = tmp_path / "model"
    code, _, err = run_import(f"{BAD}:factory", "name=gray", f"out={out}", "init.in_channels=1", "input_size=28")
    assert code == 0, err
    spec = yaml.safe_load((out / "gray.yaml").read_text())
    assert (spec["in_channels"], spec["input_size"]) == (1, 28)


def test_an_existing_file_is_kept_unless_overwrite(run_import, tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "mine.yaml").write_text("# mine\n")
    code, _, err = run_import(f"{ZOO}:Functional", "name=mine", f"out={out}")
    assert code == 2 and "overwrite=true" in err and (out / "mine.yaml").read_text() == "# mine\n"
    code, _, err = run_import(f"{ZOO}:Functional", "name=mine", f"out={out}", "overwrite=true")
    assert code == 0 and "Imported by" in (out / "mine.yaml").read_text()


@pytest.mark.parametrize("cls, names, tag", [
    ("WithLSTM", "rnn (LSTM)", "lstm"),
    ("DataDependent", "DataDependent.forward", "branch"),
    ("Gated", "mul", "mul"),
    ("Upsampling", "interpolate", "interpolate"),
    ("SpatialFlatten", ".view()", "view"),
    ("Shared", "conv (Conv2d", "shared"),
])
def test_unsupported_constructs_are_one_line_naming_what_and_where(run_import, tmp_path, cls, names, tag):
    out = tmp_path / "model"
    code, text, err = run_import(f"{BAD}:{cls}", "name=bad", f"out={out}")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert names in lines[0]
    assert f"unsupported_nets.py:{unsupported_nets.line_of(tag)}" in lines[0]
    assert not out.exists() or not list(out.iterdir())  # nothing written


@pytest.mark.parametrize("args, says", [
    ([], "SOURCE"),
    (["nope.py:Net", "name=x"], "no file nope.py"),
    ([f"{ZOO}:Nope", "name=x"], "its nn.Module classes: BnAfterRelu"),
    ([f"{ZOO}:Residual"], "name:"),
    ([f"{ZOO}:Residual", "name=x", "init.width=3"], "init:"),
    ([f"{ZOO}:Residual", "name=x", "colour=red"], "colour: unknown argument"),
    ([f"{ZOO}:Residual", "name=x", "input_size=0"], "input_size"),
])
def test_user_mistakes_are_one_line(run_import, tmp_path, args, says):
    code, _, err = run_import(*args, f"out={tmp_path / 'model'}")
    assert code == 2 and len(err.strip().splitlines()) == 1 and says in err, err


def test_package_module_source(run_import, tmp_path, monkeypatch):
    pkg = tmp_path / "mynets"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "small.py").write_text(ZOO.read_text())
    monkeypatch.syspath_prepend(str(tmp_path))
    code, text, err = run_import("mynets.small:Dilated", "name=dil", f"out={tmp_path / 'model'}")
    assert code == 0, err
    assert "RF 25" in text


def test_validate_source_prints_the_same_table_as_the_yaml_model(run_validate, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_validate(f"{ZOO}:EraS9")
    assert code == 0, err
    _, ref = validate_run(["model=dilated_sep", "model.dropout=0.05"])
    body = lambda text: [l for l in text.splitlines() if l.startswith(("layers[", "total:"))]  # noqa: E731
    assert body(out) == body(ref) and len(body(out)) == 14
    assert "OK EraS9: within budget" in out and "(d) RF 61 = gradient 61" in out
    assert [p.name for p in tmp_path.iterdir() if p.name != "mlruns"] == []  # nothing written (mlruns: conftest's)


def test_validate_source_of_an_unsupported_model_is_one_line(run_validate):
    code, out, err = run_validate(f"{BAD}:Gated")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "multiplies two paths" in err


def test_import_help_says_it_runs_the_users_code():
    done = subprocess.run([sys.executable, "-m", "archsearch.import", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "only name code you trust" in done.stdout
