"""``python -m archsearch.train``: refusals in one line before anything is loaded, and a run
stopped by SIGTERM closed as KILLED."""

import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import FAST, TINY_MODEL, runs


def test_cli_refuses_over_budget_before_anything(tmp_path, no_mlflow_record):
    p = subprocess.run([sys.executable, "-m", "archsearch.train", "model=too_wide", "data.root=/nonexistent",
                        f"hydra.run.dir={tmp_path}/out"], capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 1
    assert "REJECTED too_wide" in p.stderr and "params 220,128 exceed max_params 200,000 (by 20,128)" in p.stderr
    assert "Traceback" not in p.stderr
    assert no_mlflow_record() and not (tmp_path / "data").exists()


def test_cli_malformed_spec_is_one_line_exit_2(tmp_path):
    p = subprocess.run([sys.executable, "-m", "archsearch.train", "model.layers.7.k=0", "data.root=/nonexistent"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1] == "error: model.layers[7].k: must be a positive int, got 0"
    assert "Traceback" not in p.stderr


def test_cli_unknown_model_lists_choices(tmp_path):
    p = subprocess.run([sys.executable, "-m", "archsearch.train", "model=nope"], capture_output=True, text=True,
                       cwd=tmp_path)
    assert p.returncode == 2 and "model: no config 'nope'; available: branchy, compact, dilated_sep" in p.stderr


def test_cli_multirun_with_cfg_is_one_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "archsearch.train", "-m", "sweep=smoke", "--cfg", "job"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 2 and not (tmp_path / "multirun").exists() and not (tmp_path / "outputs").exists()
    assert p.stderr.strip() == ("error: Only one of --run, --multirun, --cfg, --info and --shell_completion can be "
                                "specified: drop -m to print one run's config or info")


@pytest.mark.parametrize("override, message", [
    ("trainer.ema=1.5", "error: trainer.ema: the per-step decay must be a number in (0, 1)"),
    ("trainer.tta=rotate", "error: trainer.tta: unknown test-time augmentation 'rotate'; choose one of none, flip, flip_shift"),
    ("aug.cooldown_fraction=1.5", "error: aug.cooldown_fraction: must be a number in [0, 1)"),
    ("trainer.kernel_check=maybe", "error: trainer.kernel_check: must be true or false; got 'maybe'"),
])
def test_cli_bad_ema_tta_cooldown_is_one_line_before_any_data(tmp_path, override, message):
    p = subprocess.run([sys.executable, "-m", "archsearch.train", override, "data.root=/nonexistent"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith(message)
    assert "Traceback" not in p.stderr and not (tmp_path / "data").exists()


def test_sigterm_closes_the_run_as_killed(tmp_path):
    cmd = [sys.executable, "-m", "archsearch.train", *FAST, *TINY_MODEL, "trainer.epochs=50", f"hydra.run.dir={tmp_path}/out"]
    p = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "out" / "last.pt").exists():
        time.sleep(0.3)
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=60)
    assert p.returncode != 0
    df = runs(tmp_path)
    assert len(df) == 1 and df.status[0] == "KILLED"  # not left RUNNING, not looking complete
