"""The machine's PostgreSQL and Redis as the tests reach them: where they are, a clear failure naming the
one that is down, and a fresh PostgreSQL schema per use. Plain helpers (no fixtures): tests import them;
the fixtures built on them live in tests/fixtures.py."""

from __future__ import annotations

import os
import socket
import uuid
from urllib.parse import quote

import pytest

PG_HOST = os.environ.get("PRUNESCOPE_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("PRUNESCOPE_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("PRUNESCOPE_TEST_PG_USER", "postgres")
PG_ADMIN_DB = os.environ.get("PRUNESCOPE_TEST_PG_DB", "test")
REDIS_HOST = os.environ.get("PRUNESCOPE_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("PRUNESCOPE_TEST_REDIS_PORT", "6379"))
#: Database 15 of the shared Redis: the tests' own, so a test never touches another program's keys.
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/15"
#: libpq connection string of the maintenance database, where per-session databases are created and dropped.
PG_ADMIN_DSN = f"host={PG_HOST} port={PG_PORT} user={PG_USER} dbname={PG_ADMIN_DB}"


def reachable(host: str, port: int) -> bool:
    """Whether a TCP connection opens within 2 s: the cheap check before a test depends on a service."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def require_postgres() -> None:
    """Fail (not skip) with how to start PostgreSQL: a missing service must not pass as green."""
    if not reachable(PG_HOST, PG_PORT):
        pytest.fail(
            f"PostgreSQL at {PG_HOST}:{PG_PORT} is not reachable: start it with "
            "`pg_ctlcluster 15 main start` (or set PRUNESCOPE_TEST_PG_HOST/PORT)",
            pytrace=False,
        )


def require_redis() -> None:
    """Fail (not skip) with how to start Redis: a missing service must not pass as green."""
    if not reachable(REDIS_HOST, REDIS_PORT):
        pytest.fail(
            f"Redis at {REDIS_HOST}:{REDIS_PORT} is not reachable: start it with "
            "`redis-server --daemonize yes` (or set PRUNESCOPE_TEST_REDIS_HOST/PORT)",
            pytrace=False,
        )


def pg_schema_url(pg_database: str) -> str:
    """A fresh schema inside the session database, selected through the connection's search_path, so
    each test (and each server it starts) sees empty tables without creating a database."""
    import psycopg

    schema = f"t{uuid.uuid4().hex[:12]}"
    dsn = pg_database.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return f"{pg_database}?options={quote(f'-csearch_path={schema}')}"
