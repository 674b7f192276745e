"""The MLflow UI as a user opens it: headless Chromium on the link a run prints, against a real
`mlflow server` on PostgreSQL. The screenshot is kept in test-artifacts/ (CI keeps that folder)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.servers

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe:
        return exe
    if os.environ.get("ARCHSEARCH_REQUIRE_BROWSER") == "1":
        pytest.fail("headless Chromium is required here but not installed (apt-get install chromium)")
    pytest.skip("Chromium is not installed (apt-get install chromium; .ci/run does)")


def browse(exe: str, url: str, **out) -> str:
    args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1600,900",
            "--virtual-time-budget=20000"]
    if "screenshot" in out:
        args.append(f"--screenshot={out['screenshot']}")
    else:
        args.append("--dump-dom")
    p = subprocess.run([*args, url], capture_output=True, text=True, timeout=180)
    return p.stdout


def test_the_printed_link_opens_the_runs_table_with_dataset_and_model(servers, tmp_path):
    exe = chromium()
    _, mlflow_server = servers
    p = subprocess.run([sys.executable, "-m", "archsearch.train", "data=synthetic", "data.n_train=256", "data.n_test=64",
                        "data.val_size=64", "model.narrow=8", "model.wide=32", "budget.max_params=100000",
                        "trainer.epochs=1", "trainer.progress=false", "trainer.amp=off", "trainer.channels_last=false",
                        f"tracking.uri='{mlflow_server.url}'", "run_name=browser-probe"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    link = re.search(r"MLflow: (\S+)", p.stdout + p.stderr).group(1)
    assert link.startswith(mlflow_server.url) and "workflowType=machine_learning" in link
    runs_page = re.sub(r"/runs/[0-9a-f]+\?", "/runs?", link)
    dom = browse(exe, runs_page)
    ARTIFACTS.mkdir(exist_ok=True)
    browse(exe, runs_page, screenshot=ARTIFACTS / "mlflow-runs.png")
    assert "browser-probe" in dom  # the run is listed
    assert "Dataset" in dom and re.search(r"synthetic \([0-9a-f]{10}\)", dom)  # its dataset input, with digest
    assert "Models" in dom and "dilated_sep" in dom  # its logged model
    assert (ARTIFACTS / "mlflow-runs.png").stat().st_size > 10_000
