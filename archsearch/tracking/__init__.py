"""MLflow, and only here. Uses ``MlflowClient`` (no global active run), so a run can be
opened, nested under a parent and closed from any process of a sweep.

Default store: ``sqlite:///<cwd>/mlruns/mlflow.db`` with artifacts under ``mlruns/artifacts``
(MLflow >= 3.13 refuses the plain ``./mlruns`` file store). Compare runs with::

    mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db

What a run records beyond params/metrics/artifacts, so that MLflow's own UI is filled: the
experiment is marked as a training ("Machine learning") experiment, the dataset is a dataset
input, the best weights a logged PyTorch model linked to the run and its metrics
(``tracking.log_model``), and CPU / memory / GPU use as system metrics on request
(``trainer.system_metrics``). MLflow 3.17's UI also keeps a per-browser "GenAI / Machine
learning" switch; ``#/experiments/<id>/runs?workflowType=machine_learning`` sets it.
"""

from archsearch.tracking.records import (
           COMPARE,
           record_rejected,
           record_scored,
           run_lifecycle,
           size_metrics,
           trial_run_name,
)
from archsearch.tracking.store import default_uri, make_tracker, ui_link
from archsearch.tracking.tracker import (
           EXPERIMENT_KIND,
           EXPERIMENT_KIND_TAG,
           NullTracker,
           Tracker,
           flatten,
)

__all__ = ["COMPARE", "EXPERIMENT_KIND", "EXPERIMENT_KIND_TAG", "NullTracker", "Tracker", "default_uri", "flatten",
           "make_tracker", "record_rejected", "record_scored", "run_lifecycle", "size_metrics", "trial_run_name",
           "ui_link"]
