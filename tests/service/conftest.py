"""Service fixtures: the store on SQLite and on PostgreSQL (a fresh database per test session, a
fresh schema per test), Redis, and a clear failure naming the service that is down."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from api.settings import Settings
from api.store import make_engine, make_session_factory, migrate

PG_HOST = os.environ.get("PRUNESCOPE_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("PRUNESCOPE_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("PRUNESCOPE_TEST_PG_USER", "postgres")
PG_ADMIN_DB = os.environ.get("PRUNESCOPE_TEST_PG_DB", "test")
REDIS_HOST = os.environ.get("PRUNESCOPE_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("PRUNESCOPE_TEST_REDIS_PORT", "6379"))



def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def require_postgres() -> None:
    if not _reachable(PG_HOST, PG_PORT):
        pytest.fail(
            f"PostgreSQL at {PG_HOST}:{PG_PORT} is not reachable: start it with "
            "`pg_ctlcluster 15 main start` (or set PRUNESCOPE_TEST_PG_HOST/PORT)",
            pytrace=False,
        )


def require_redis() -> None:
    if not _reachable(REDIS_HOST, REDIS_PORT):
        pytest.fail(
            f"Redis at {REDIS_HOST}:{REDIS_PORT} is not reachable: start it with "
            "`redis-server --daemonize yes` (or set PRUNESCOPE_TEST_REDIS_HOST/PORT)",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A database created for this test session and dropped after it."""
    require_postgres()
    import psycopg

    name = f"prunescope_test_{uuid.uuid4().hex[:10]}"
    admin = f"host={PG_HOST} port={PG_PORT} user={PG_USER} dbname={PG_ADMIN_DB}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_schema_url(pg_database: str) -> str:
    """A fresh schema inside the session database, selected through the connection's search_path."""
    import psycopg

    schema = f"t{uuid.uuid4().hex[:12]}"  # unique even when two test packages import this module
    dsn = pg_database.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return f"{pg_database}?options={quote(f'-csearch_path={schema}')}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return pg_schema_url(request.getfixturevalue("pg_database"))


@pytest.fixture
def redis_url() -> str:
    require_redis()
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/15"


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=db_url, heartbeat_stale_s=5)


@pytest.fixture
def session_factory(settings: Settings):  # noqa: ANN201 - a sessionmaker
    engine = make_engine(settings.db_url)
    migrate(engine)
    yield make_session_factory(engine)
    engine.dispose()
