"""The user guide builds with ``mkdocs build --strict`` (as CI does): every page in the nav, no
broken link or anchor, links to repository files outside docs/ pointing at files that exist."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _build(tmp_path: Path, config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config),
                           "-d", str(tmp_path / "site")], capture_output=True, text=True, cwd=config.parent,
                          env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"}, timeout=300)


@pytest.mark.slow
def test_the_guide_builds_strictly_with_every_page(tmp_path):
    r = _build(tmp_path, ROOT / "mkdocs.yml")  # mkdocs is in the dev extras: no silent skip
    assert r.returncode == 0, r.stderr[-2000:]
    site = tmp_path / "site"
    for page in ("models", "training", "tracking", "search", "after-a-sweep", "benchmarks", "development",
                 "recipe", "grammar", "search-results", "operations", "engine"):
        assert (site / page / "index.html").is_file(), page
    models = (site / "models" / "index.html").read_text()
    assert "format=svg" in models and "The model spec" in models
    # a link out of docs/ is shown as the repository path it points at
    assert "<code>conf/model/res_found.yaml</code>" in (site / "search-results" / "index.html").read_text()


@pytest.mark.slow
def test_a_broken_link_fails_the_build(tmp_path):
    work = tmp_path / "repo"
    for folder in ("docs", "conf", "archsearch"):  # the pages and the repository files they link to
        shutil.copytree(ROOT / folder, work / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("mkdocs.yml", "BENCHMARKS.md", "README.md"):
        shutil.copy(ROOT / name, work / name)
    assert _build(tmp_path, work / "mkdocs.yml").returncode == 0
    page = work / "docs" / "benchmarks.md"
    page.write_text(page.read_text() + "\nSee [the missing page](nowhere.md).\n")
    r = _build(tmp_path, work / "mkdocs.yml")
    assert r.returncode != 0 and "nowhere.md" in r.stderr
    page.write_text(page.read_text().replace("[the missing page](nowhere.md)", "[code](../archsearch/gone.py)"))
    r = _build(tmp_path, work / "mkdocs.yml")
    assert r.returncode != 0 and "gone.py" in r.stderr


def test_the_results_files_models_are_shipped_with_the_params_they_state():
    """docs/search-results.json's winners and time-to-85% entry name models a user can train
    (``model=NAME``), and the parameter counts stated are those networks' (not stale)."""
    import json

    from archsearch import analyze, load_spec
    from archsearch.config.paths import available

    results = json.loads((ROOT / "docs" / "search-results.json").read_text())
    entries = [*results["winners"], results["time_to_85"]]
    assert {e["model"] for e in entries} <= set(available("model"))
    for e in entries:
        a = analyze(load_spec(e["model"]))
        assert (a.params, a.rf) == (e["params"], e["rf"]), e["model"]
