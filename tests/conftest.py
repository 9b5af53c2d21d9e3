"""Test session settings: one thread per process (2 cores oversubscribe badly), offline hubs, byte-code caching."""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from pathlib import Path

# Byte-code caching: the suite starts dozens of CLI processes, and without it each one recompiles
# every module it imports (MLflow, Optuna, SQLAlchemy: seconds a process). `make test` unexports
# PYTHONDONTWRITEBYTECODE; where a caller set it to keep .pyc files out of the tree, they go to a
# folder of their own instead (PYTHONPYCACHEPREFIX), for this process and every one it starts.
if os.environ.pop("PYTHONDONTWRITEBYTECODE", None):
    os.environ.setdefault("PYTHONPYCACHEPREFIX", str(Path(tempfile.gettempdir()) / "synpro-pycache"))
    sys.pycache_prefix = os.environ["PYTHONPYCACHEPREFIX"]
    sys.dont_write_bytecode = False

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
# Piped CLI output wraps at COLUMNS (80 where unset): tests read whole lines, so give them room; tests of
# the narrow layout set COLUMNS themselves.
os.environ.setdefault("COLUMNS", "160")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from generators import parrot_model, random_model  # noqa: E402,F401  (session fixtures for every test file)

@pytest.fixture(scope="session", autouse=True)
def _error_log(tmp_path_factory) -> None:
    """A CLI internal error writes its traceback into this session's temp folder (one per pytest-xdist
    worker), not into the user's ~/.cache/synpro, where parallel workers would overwrite each other's."""
    if "SYNPRO_ERROR_LOG" in os.environ:  # the caller chose a place
        return
    path = tmp_path_factory.getbasetemp() / "last-error.log"
    os.environ["SYNPRO_ERROR_LOG"] = str(path)  # every CLI process the tests start
    if "cli.app" in sys.modules:  # this process: the path is read when cli.app is imported
        sys.modules["cli.app"].ERROR_LOG = path


POSTGRES_URL = os.environ.get("SYNPRO_TEST_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")


@pytest.fixture
def postgres_url():
    """A fresh schema-isolated PostgreSQL database URL; skips (saying why) when no server answers."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install 'synpro[postgres]')")
    engine = sqlalchemy.create_engine(POSTGRES_URL)
    try:
        with engine.connect():
            pass
    except Exception as exc:  # noqa: BLE001 - any connection failure means "no server here"
        pytest.skip(f"no PostgreSQL server at {POSTGRES_URL}: {type(exc).__name__}")
    name = f"synpro_test_{uuid.uuid4().hex[:10]}"
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine.dispose()
    url = POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    yield url
    engine = sqlalchemy.create_engine(POSTGRES_URL)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path) -> str:
    """A results-store URL: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'results.db'}"
    return request.getfixturevalue("postgres_url")
