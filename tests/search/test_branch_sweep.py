"""The shipped branch-pattern search (sweeps/arch_branch_100k.yaml): every candidate it scores is
res_branch under the 100k cap, every candidate over the cap or the MAC limit is rejected with its
figures, and nothing trains."""

import os
import subprocess
import sys

import pytest

from archsearch import analyze, check, load_budget, load_spec


def test_res_branch_is_within_the_100k_budget_with_the_branch_pattern():
    spec = load_spec("res_branch")
    report = analyze(spec)
    assert report.params < 100_000 and report.rf >= 44
    assert not check(report, load_budget())  # every rule of the assignment holds
    for stage, width in (("c2", 64), ("c3", 96)):  # depthwise 3x3 / 7x7 / dilated 7x7 on the same input
        paths = [r.layer.args for r in report.layers if r.path.startswith(f"model.stages.{stage}[1](1).body[0].body[0].paths")]
        assert [(a["k"], a["d"], a["groups"]) for a in paths] == [(3, 1, width), (7, 1, width), (7, 3, width)]


@pytest.mark.slow
def test_arch_branch_100k_scores_candidates_without_training(tmp_path):
    p = subprocess.run([sys.executable, "-m", "archsearch.train", "-m", "sweep=arch_branch_100k",
                        "hydra.sweeper.n_trials=6", "hydra.sweeper.sampler.name=random", "hydra.sweeper.sampler.seed=3",
                        "hydra.sweep.dir=multirun/b"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    log = p.stdout + p.stderr
    assert p.returncode == 0, log[-3000:]
    assert "epoch 1/" not in log and "Traceback" not in log
    scored = [line for line in log.splitlines() if "COMPLETE (scored, not trained): macs=" in line]
    assert len(scored) == 6
    for line in scored:
        macs = int(line.split("macs=")[1].split()[0].replace(",", ""))
        assert macs <= 45_000_000
    rejected = [line for line in log.splitlines() if "REJECTED (no job launched)" in line]
    assert all("exceed max_params 100,000" in r or "exceed max_macs 45,000,000" in r for r in rejected)
    assert "study arch_branch_100k: 6 scored without training" in log


@pytest.mark.slow
def test_the_timed_branch_search_scores_macs_and_this_machines_training_time(tmp_path):
    """sweep=arch_branch_100k_timed: each candidate's training step timed here (ms_per_image), no
    epoch trained; the summary names the front of the two objectives; report shows the times."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ARCHSEARCH_CACHE_DIR": str(tmp_path / "cache")}
    p = subprocess.run([sys.executable, "-m", "archsearch.train", "-m", "sweep=arch_branch_100k_timed",
                        "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.name=random", "hydra.sweeper.sampler.seed=3",
                        "hydra.sweep.dir=multirun/t", "budget.max_params=60000"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    log = p.stdout + p.stderr
    assert p.returncode == 0, log[-3000:]
    assert "epoch 1/" not in log and "Traceback" not in log
    scored = [line for line in log.splitlines() if "COMPLETE (scored, not trained): macs=" in line]
    assert len(scored) == 3
    times = [float(line.split("ms_per_image=")[1].split()[0]) for line in scored]
    assert all(t > 0 for t in times)
    assert "on the front of macs (maximize) and ms_per_image (minimize): trials " in log
    r = subprocess.run([sys.executable, "-m", "archsearch.report", "sweep=arch_branch_100k_timed"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ms/img" in r.stdout and f"{times[0]:.2f}" in r.stdout
    assert (tmp_path / "outputs" / "reports" / "arch_branch_100k_timed" / "macs-vs-time.png").stat().st_size > 0
    first = int(scored[0].split("trial ")[1].split()[0])
    e = subprocess.run([sys.executable, "-m", "archsearch.export", "sweep=arch_branch_100k_timed", f"trial={first}",
                        "name=timed_pick", f"out={tmp_path / 'models' / 'model'}"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300, env=env)
    assert e.returncode == 0, e.stderr[-2000:]
    header = (tmp_path / "models" / "model" / "timed_pick.yaml").read_text()
    assert f"# proxy: scored without training by macs,ms_per_image ({times[0]:.2f} ms per training image in " in header
