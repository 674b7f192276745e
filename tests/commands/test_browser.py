"""The MLflow UI as a user opens it: headless Chromium on the link a run prints, against a real
`mlflow server` on PostgreSQL; a sweep's trials as they read in the runs table and side by side on
the compare page. The screenshots are kept in test-artifacts/ (CI keeps that folder)."""

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
from studies import journal_study, sweep_smoke

pytestmark = pytest.mark.servers

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
FINISHED_ICON = 'd="M11.53 6.53 7 11.06 4.47 8.53'  # the check in a circle MLflow's UI draws for a FINISHED run


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


def test_a_sweeps_trials_read_apart_in_the_runs_table_and_compare_side_by_side(servers, tmp_path):
    """Three trials (one completes, one is over the budget, one is hopeless and pruned): each run's name says
    which trial it is and how it did, none carries the red KILLED mark of a crash, and the compare page
    of the three shows the columns a user compares."""
    from mlflow.tracking import MlflowClient

    exe = chromium()
    _, mlflow_server = servers
    st = journal_study(tmp_path, "glance")
    for p in ({"model.wide": 32, "optim.lr": 0.05}, {"model.wide": 72, "optim.lr": 0.05},
              {"model.wide": 32, "optim.lr": 1e-7}):
        st.enqueue_trial(p)
    p = sweep_smoke(tmp_path, "hydra.sweeper.study_name=glance", "model.wide=choice(32,72)",
                    "optim.lr=choice(0.05,1e-7)", "hydra.sweeper.n_trials=2", "trainer.epochs=2",
                    "hydra.sweeper.pruner={name:median,n_startup_trials:1,n_warmup_steps:0}",
                    f"tracking.uri='{mlflow_server.url}'", "hydra.sweep.dir=multirun/g")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    client = MlflowClient(mlflow_server.url)
    exp = client.get_experiment_by_name("archsearch")
    parent = client.search_runs([exp.experiment_id], "tags.`archsearch.study` = 'glance'")[0]
    kids = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    names = {r.info.run_name: r for r in kids}
    assert re.fullmatch(r"t0 val 0\.\d{3} \d+k", min(names)) and {"t1 rejected", "t2 pruned@1"} <= set(names)
    assert {r.info.status for r in kids} == {"FINISHED"}
    ARTIFACTS.mkdir(exist_ok=True)
    # what "Sort: val_acc" in the runs table gives: the trials out of their study's row, best first
    by_val = urllib.parse.quote("metrics.`val_acc`")
    table = (f"{mlflow_server.url}/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning"
             f"&orderByKey={by_val}&orderByAsc=false")
    dom = browse(exe, table)
    (ARTIFACTS / "mlflow-trials.html").write_text(dom)
    browse(exe, table, screenshot=ARTIFACTS / "mlflow-trials.png")
    for name in names:
        assert name in dom  # each trial's own name in the runs table
    assert dom.index(min(names)) < min(dom.index(n) for n in names if n != min(names))  # the scored one first
    finished = dom.count(FINISHED_ICON)
    rows = len(re.findall(r'role="gridcell" col-id="runDateAndNestInfo"', dom))
    assert rows >= len(names) and finished == rows  # every row's status: the green check, no red mark
    ids = json.dumps([r.info.run_id for r in kids])
    compare = (f"{mlflow_server.url}/#/compare-runs?runs={urllib.parse.quote(ids)}"
               f"&experiments={urllib.parse.quote(json.dumps([exp.experiment_id]))}")
    dom = browse(exe, compare)
    (ARTIFACTS / "mlflow-compare.html").write_text(dom)
    browse(exe, compare, screenshot=ARTIFACTS / "mlflow-compare.png")
    for column in ("val_acc", "test_acc", "params", "rf", "macs", "epochs"):
        assert re.search(rf">\s*{column}\s*<", dom), column
    assert (ARTIFACTS / "mlflow-trials.png").stat().st_size > 10_000
