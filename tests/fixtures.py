"""Every fixture shared across test folders, in one module registered once by tests/conftest.py
(``pytest_plugins``), so no test imports a conftest or another test module to reuse one.

- the store: ``pg_database`` (a PostgreSQL database per session), ``db_url`` (each test on SQLite and on a
  fresh PostgreSQL schema), ``settings`` and ``session_factory`` on it, ``redis_url``;
- the app in process: ``sqlite_settings`` and ``client`` (a TestClient with a recording dispatcher);
- a trained model: ``trained_digits_state`` (once per session) and ``trained_digits`` (a fresh copy).

A folder's conftest or a test module may define a fixture of the same name for its own needs (the client
tests' ``client`` is a remote ``api.client.Client``); pytest then uses the nearer one.
Plain helpers live in tests/services.py (PostgreSQL, Redis) and tests/apps.py (the dispatcher, the app).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

# Embedded sweeps run their shards in the server's job thread here: a child process per shard would start
# Python and import torch once per shard, many times over in this suite. The child processes (the default)
# have their own tests, which set shard_processes themselves; servers started by tests inherit this.
os.environ.setdefault("PRUNESCOPE_SHARD_PROCESSES", "0")

from api.shared.settings import Settings
from api.store import make_engine, make_session_factory, migrate
from tests.apps import make_app, sqlite_settings_in
from tests.services import (
    PG_ADMIN_DSN,
    PG_HOST,
    PG_PORT,
    PG_USER,
    REDIS_URL,
    pg_schema_url,
    require_postgres,
    require_redis,
)

# ----------------------------------------------------------------------------------------------
# The store
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A database created for this test session and dropped after it (its URL, for SQLAlchemy)."""
    require_postgres()
    import psycopg

    name = f"prunescope_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test that asks runs twice: on a temp SQLite file and on a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return pg_schema_url(request.getfixturevalue("pg_database"))


@pytest.fixture
def redis_url() -> str:
    """The shared Redis's test database; fails with how to start Redis when it is down."""
    require_redis()
    return REDIS_URL


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    """Settings on ``db_url`` with a short heartbeat, so stale-shard tests need seconds, not minutes."""
    return Settings(data_dir=tmp_path / "data", database_url=db_url, heartbeat_stale_s=5)


@pytest.fixture
def session_factory(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """Sessions on the migrated store of ``settings``; the engine is disposed after the test."""
    engine = make_engine(settings.db_url)
    migrate(engine)
    yield make_session_factory(engine)
    engine.dispose()


# ----------------------------------------------------------------------------------------------
# The app in process
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    """A temp SQLite store: for tests about the app, not the database (mutable: set a token, CORS...)."""
    return sqlite_settings_in(tmp_path)


@pytest.fixture
def client(sqlite_settings: Settings) -> Iterator[TestClient]:
    """The app on ``sqlite_settings`` with a recording dispatcher (``client.app.state.dispatcher.sent``)."""
    with TestClient(make_app(sqlite_settings)) as c:
        yield c


# ----------------------------------------------------------------------------------------------
# A trained model (a few seconds on a CPU, once per session)
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def trained_digits_state() -> dict:
    """state_dict of digits-cnn trained 3 epochs on digits (about 95 % test top1); copy before use."""
    import torch

    from pruning_core.datasets import load_dataset, make_loader
    from pruning_core.models import create_model
    from pruning_core.training import train

    torch.set_num_threads(1)
    model = create_model("digits-cnn")
    loader = make_loader(load_dataset("digits", "train"), batch_size=64, shuffle=True, seed=0)
    train(model, loader, epochs=3, lr=0.05, seed=0, device="cpu", progress=False)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture()
def trained_digits(trained_digits_state: dict):  # noqa: ANN201 - a torch module; torch is imported lazily
    """A fresh digits-cnn with the session's trained weights (tests may modify it freely)."""
    from pruning_core.models import create_model

    model = create_model("digits-cnn")
    model.load_state_dict(trained_digits_state)
    return model.eval()


# ----------------------------------------------------------------------------------------------
# Finished jobs to export (issue 18: MLflow, TensorBoard)
# ----------------------------------------------------------------------------------------------

EXPORT_SCHEDULE = """version: 1
pruners:
  conv:
    class: SparsityLevelParameterPruner
    levels: {conv2.weight: 0.5}
policies:
  - pruner: {instance_name: conv}
    epochs: [0]
"""


@pytest.fixture(scope="session")
def finished_jobs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """``(client, {"sensitivity": id, "prune": id})``: a ``Client.local`` service with a finished tiny sweep
    (digits-cnn, two weights, two levels) and a two-epoch prune job, for the export tests."""
    from api.client import Client

    with Client.local(tmp_path_factory.mktemp("exports"), progress=False) as client:
        sense = client.sense("digits-cnn", "digits", levels="0,0.5", params=["conv1.weight", "fc.weight"], shards=1)
        prune = client.prune("digits-cnn", "digits", EXPORT_SCHEDULE, epochs=2, batch_size=256)
        assert sense.status == prune.status == "succeeded", (sense.error, prune.error)
        yield client, {"sensitivity": sense.id, "prune": prune.id}
