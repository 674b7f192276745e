"""The validate CLI: verdicts, exit codes, and one-line errors that name the YAML path."""

import json
import subprocess
import sys

import pytest


def test_dilated_sep_passes_with_a_table(run_validate):
    code, out, err = run_validate("model=dilated_sep")
    assert code == 0
    assert "total: 181,984 params" in out and "receptive field 61" in out
    assert "OK dilated_sep" in out
    assert len([l for l in out.splitlines() if l.startswith("layers[")]) == 13  # one row per layer, by YAML path


def test_too_wide_is_rejected_with_measured_value_and_limit(run_validate):
    code, out, err = run_validate("model=too_wide")
    assert code == 1
    assert "params 220,128 exceed max_params 200,000 (by 20,128)" in out


def test_rf_violation_line(run_validate):
    code, out, _ = run_validate("model=dilated_sep", "budget.min_rf=70")
    assert code == 1
    assert "receptive field 61 < min_rf 70" in out


def test_rules_are_switchable(run_validate):
    assert run_validate("model=strided")[0] == 1
    assert run_validate("model=strided", "budget.require_dilated=false")[0] == 0


def test_json_format(run_validate):
    code, out, _ = run_validate("model=dilated_sep", "format=json")
    d = json.loads(out)
    assert code == 0 and d["ok"] is True
    assert (d["params"], d["rf"], len(d["layers"])) == (181_984, 61, 13)


BAD = [
    ("unknown op", ["model.layers.7.op=sepcov"],
     "model.layers[7].op: unknown op 'sepcov'; choose one of conv, sepconv, maxpool, gap, linear, residual, "
     "branches, repeat"),
    ("non-positive kernel", ["model.layers.7.k=0"], "model.layers[7].k: must be a positive int, got 0"),
    ("wrong type", ["model.layers.0.out='wide'"], "model.layers[0].out: must be a positive int, got 'wide'"),
    ("missing field", ["~model.layers.4.out"], "model.layers[4].out: missing (required by op 'conv')"),
    ("unknown field", ["+model.layers.4.kernel=3"], "model.layers[4].kernel: unknown field for op 'conv'"),
    ("groups", ["+model.layers.1.groups=5"], "model.layers[1].groups: groups 5 does not divide the input channels 32"),
    ("collapse", ["model.layers.3.k=40", "model.layers.3.p=0"], "model.layers[3]: spatial size collapses"),
    ("classes", ["model.layers.11.out=12"],
     "model.layers[11].out: the model outputs 12 classes but model.num_classes is 10"),
    ("empty", ["model.layers=[]"], "model.layers: empty model"),
    ("bad activation", ["model.layer_defaults.act=relu7"], "model.layer_defaults.act: unknown activation 'relu7'"),
    ("no gap", ["model.layers.12.op=maxpool"], "model.layers[12]: the model ends with a 10x3x3 map"),
    ("code in a spec", ["+model.layers.0._target_=os.system"], "model.layers[0]._target_: specs are data"),
    ("unknown model field", ["+model.widht=3"], "model.widht: unknown field"),
    ("bad budget", ["budget.max_params=lots"], "budget.max_params: must be a non-negative int"),
    ("bad format", ["format=xml"], "format: unknown format 'xml'; choose one of table, json"),
    ("unknown model", ["model=nonexistent"], "model: no config 'nonexistent'; available: branchy, compact, dilated_sep"),
    ("bad override key", ["model.layers.99.d=1"], "Error merging override model.layers.99.d=1; list index out of range"),
    ("field not in the yaml needs +", ["model.layers.0.d=2"], "use +model.layers.0.d=2"),
]


@pytest.mark.parametrize("name,args,message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_and_exit_2(run_validate, name, args, message):
    code, out, err = run_validate(*args)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_real_cli_exit_codes():
    ok = subprocess.run([sys.executable, "-m", "archsearch.validate", "model=dilated_sep"], capture_output=True, text=True)
    bad = subprocess.run([sys.executable, "-m", "archsearch.validate", "model.layers.7.k=0"], capture_output=True, text=True)
    assert ok.returncode == 0 and "OK dilated_sep" in ok.stdout
    assert bad.returncode == 2 and bad.stderr.strip() == "error: model.layers[7].k: must be a positive int, got 0"


def test_a_command_under_a_profiler_still_writes_its_profile(tmp_path):
    """Commands skip the interpreter's teardown on exit (archsearch.cli.run), except under a
    profiler, debugger or coverage tool, which write their results after the command's end."""
    prof = tmp_path / "validate.prof"
    p = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "archsearch.validate", "model=too_wide"],
                       capture_output=True, text=True)
    assert "REJECTED too_wide" in p.stdout  # (cProfile itself swallows the exit status)
    assert prof.exists() and prof.stat().st_size > 0


def test_a_command_with_an_idle_thread_pool_still_exits(tmp_path):
    """torch.compile leaves a thread pool behind; ending a command stops it as the interpreter
    would (before joining the threads) instead of waiting on its idle workers forever."""
    script = tmp_path / "pool.py"
    script.write_text("from concurrent.futures import ThreadPoolExecutor\n"
                      "from archsearch import cli\n"
                      "pool = ThreadPoolExecutor(2)\n"
                      "cli.run(lambda: print(pool.submit(sum, [20, 22]).result()))\n")
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "42", p.stderr


def test_a_reader_that_stops_early_gets_no_traceback(tmp_path):
    """``python -m archsearch.report ... | head -1``: the command ends quietly when the reader
    closes the pipe (status 0), not with a BrokenPipeError traceback."""
    script = tmp_path / "many.py"
    script.write_text("from archsearch import cli\n"
                      "def main():\n"
                      "    for i in range(200000):\n"
                      "        print(f'line {i}')\n"
                      "    return 0\n"
                      "cli.run(main)\n")
    p = subprocess.run(f"'{sys.executable}' '{script}' | head -1; exit ${{PIPESTATUS[0]}}", shell=True,
                       executable="/bin/bash", capture_output=True, text=True, timeout=60)
    assert p.stdout == "line 0\n" and "Traceback" not in p.stderr and p.returncode == 0, p.stderr[-1000:]


def test_validate_loads_no_torch_optuna_or_mlflow():
    """``python -m archsearch.validate`` analyses a spec without the training and sweep stacks
    (the imports they need stay lazy, e.g. ``archsearch.build_model``'s torch)."""
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "archsearch.validate", "model=dilated_sep"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "OK dilated_sep" in p.stdout, p.stderr[-2000:]
    loaded = {line.rsplit("|", 1)[-1].strip() for line in p.stderr.splitlines() if line.startswith("import time:")}
    assert "omegaconf" in loaded  # (the check sees the imports)
    assert not loaded & {"torch", "optuna", "mlflow"}, sorted(loaded & {"torch", "optuna", "mlflow"})
