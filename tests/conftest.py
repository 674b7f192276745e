import os

import pytest

# tests run on CPU with synthetic data only, and never need ../shared
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# one compute thread per test process: `make test` runs one pytest worker per core (pytest-xdist),
# and the sweep tests' subprocesses inherit this too; more threads than cores only adds spinning
os.environ.setdefault("OMP_NUM_THREADS", "1")
# the precision probe's cache: one per test session (shared by its subprocesses), never the user's
if "ARCHSEARCH_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["ARCHSEARCH_CACHE_DIR"] = tempfile.mkdtemp(prefix="archsearch-test-cache-")


@pytest.fixture
def run_validate(capsys):
    """Call the validate CLI in-process: returns (exit code, stdout, stderr)."""
    from archsearch.validate import main

    def _run(*args):
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    return _run


@pytest.fixture
def bf16_cpu(monkeypatch):
    """The precision choice as on an x86 CPU with bf16 instructions, whatever CPU runs the tests:
    ``auto`` times the bf16 candidates (on one without, it times fp32 only)."""
    from archsearch.training import precision

    monkeypatch.setattr(precision, "cpu_flags", lambda: {"sse2", "avx2", "avx512f", "avx512_bf16"})


class Postgres:
    """A throwaway PostgreSQL server on loopback, really started (and restartable, for fault tests)."""

    def __init__(self, bindir, root: str, port: int):
        self.bindir, self.root, self.port = bindir, root, port
        self.pre = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def ctl(self, *args: str, check: bool = True) -> None:
        import subprocess

        subprocess.run([*self.pre, str(self.bindir / "pg_ctl"), "-D", f"{self.root}/data", *args],
                       check=check, capture_output=True, timeout=120)

    def start(self) -> None:
        self.ctl("-l", f"{self.root}/log", "-w", "-o",
                 f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1", "start")

    def restart(self) -> None:
        """Drops every connection (fast shutdown) and starts again on the same port."""
        self.ctl("-m", "fast", "-w", "stop")
        self.start()

    def create_database(self, name: str) -> str:
        import sqlalchemy

        eng = sqlalchemy.create_engine(self.url, isolation_level="AUTOCOMMIT")
        with eng.connect() as c:
            c.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        eng.dispose()
        return self.url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(scope="session")
def postgres():
    """The :class:`Postgres` server. Skips when PostgreSQL is not installed, unless
    ARCHSEARCH_REQUIRE_POSTGRES=1 (CI sets it)."""
    import glob
    import shutil
    import socket
    import tempfile
    from pathlib import Path

    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not bins:
        if os.environ.get("ARCHSEARCH_REQUIRE_POSTGRES") == "1":
            pytest.fail("PostgreSQL is required here but not installed (apt-get install postgresql)")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; .ci/run does)")
    import subprocess

    bindir = Path(bins[-1]).parent
    d = tempfile.mkdtemp(prefix="archsearch-pg-", dir="/tmp")
    os.chmod(d, 0o777)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pg = Postgres(bindir, d, port)
    subprocess.run([*pg.pre, str(bindir / "initdb"), "-D", f"{d}/data", "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True)
    pg.start()
    try:
        yield pg
    finally:
        pg.ctl("-m", "immediate", "stop", check=False)
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url(request):
    """A PostgreSQL URL: $ARCHSEARCH_TEST_POSTGRES, else the throwaway server's."""
    url = os.environ.get("ARCHSEARCH_TEST_POSTGRES")
    return url or request.getfixturevalue("postgres").url


class MlflowServer:
    """A real `mlflow server` (PostgreSQL backend store, local artifacts) on 127.0.0.1; stoppable."""

    def __init__(self, store: str, artifacts: str):
        import socket

        self.store, self.artifacts = store, artifacts
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self, timeout: float = 120) -> None:
        import subprocess
        import sys
        import time
        import urllib.request
        from pathlib import Path

        exe = Path(sys.executable).parent / "mlflow"
        self.log = open(Path(self.artifacts).parent / "server.log", "a")
        self.proc = subprocess.Popen([str(exe), "server", "--backend-store-uri", self.store, "--artifacts-destination",
                                      self.artifacts, "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        end = time.time() + timeout
        while time.time() < end:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"mlflow server did not come up; see {self.log.name}")

    def stop(self) -> None:
        import signal
        import subprocess

        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="session")
def servers(postgres):
    """PostgreSQL (Optuna's study and MLflow's backend store) and an MLflow tracking server on it."""
    import shutil
    import tempfile

    d = tempfile.mkdtemp(prefix="archsearch-mlflow-server-")
    store = postgres.create_database(f"mlflow_{os.getpid()}")
    srv = MlflowServer(store, f"{d}/artifacts")
    srv.start()
    try:
        yield postgres, srv
    finally:
        srv.stop()
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def _mlflow_schema_template(tmp_path_factory):
    """An empty MLflow database with its schema, created once: creating the tables costs
    seconds, copying the file milliseconds."""
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture(autouse=True)
def _mlflow_db_ready(request):
    """Tests that work in ``tmp_path`` find ``tmp_path/mlruns/mlflow.db`` with MLflow's schema in
    place (the default store of a run started there); archsearch creates its experiment as usual."""
    if "tmp_path" not in request.fixturenames:
        return
    import shutil

    tmp_path = request.getfixturevalue("tmp_path")
    (tmp_path / "mlruns").mkdir(exist_ok=True)
    shutil.copyfile(request.getfixturevalue("_mlflow_schema_template"), tmp_path / "mlruns" / "mlflow.db")
