"""Which MLflow store a run goes to (the default SQLite file under the base folder, or
``tracking.uri``), the Tracker for a ``tracking`` config, and the UI link that opens its runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from archsearch.config.paths import base_dir
from archsearch.errors import ConfigError
from archsearch.tracking.tracker import NullTracker, Tracker


def default_uri(base: str | Path | None = None) -> str:
    """The SQLite store under ``base`` (default: the base folder, :func:`archsearch.config.paths.base_dir`)."""
    base = Path(base or base_dir()).resolve()
    return f"sqlite:///{base / 'mlruns' / 'mlflow.db'}"


def ui_link(tracker, run_id: str | None = None) -> str | None:
    """Where a user sees the experiment's runs (or one run) in the MLflow UI, opened on "Model training":
    MLflow 3.17's UI decides GenAI vs model training from a per-browser switch (default GenAI, an empty
    Overview) that the ``workflowType`` parameter sets; the experiment tag alone does not."""
    if not getattr(tracker, "enabled", False):
        return None
    uri = str(tracker.uri)
    served = uri.startswith(("http://", "https://"))  # a tracking server; else a store `mlflow ui` serves
    base = uri.rstrip("/") if served else "http://127.0.0.1:5000"
    page = f"runs/{run_id}" if run_id else "runs"
    link = f"{base}/#/experiments/{tracker.experiment_id}/{page}?workflowType=machine_learning"
    return link if served else f"{link} (after: mlflow ui --backend-store-uri {uri})"


def make_tracker(cfg: Mapping[str, Any] | None, base_dir: str | Path | None = None):
    """``cfg`` is the ``tracking`` config group."""
    if not cfg or not cfg.get("enabled", True):
        return NullTracker()
    for key in ("log_model", "log_checkpoint"):
        if not isinstance(cfg.get(key, True), bool):
            raise ConfigError(f"tracking.{key}: must be true or false; got {cfg.get(key)!r}")
    uri = cfg.get("uri") or default_uri(base_dir)
    return Tracker(uri, cfg.get("experiment") or "archsearch")
