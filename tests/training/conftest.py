"""What the training tests share beyond tests/helpers.py."""

import sqlite3

import pytest


@pytest.fixture
def no_mlflow_record(tmp_path):
    """-> a check that nothing was written to the test's MLflow store (the tests start it as an
    empty schema in tmp_path/mlruns)."""

    def check() -> bool:
        db = tmp_path / "mlruns" / "mlflow.db"
        if not db.exists():
            return True
        with sqlite3.connect(db) as con:
            return not con.execute("select count(*) from runs").fetchone()[0] and not any(
                r[0] == "archsearch" for r in con.execute("select name from experiments"))

    return check

