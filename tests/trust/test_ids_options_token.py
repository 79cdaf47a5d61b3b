"""Issue 13, finding 9 (the smaller ones) against live servers: 64-bit ids on both stores that are
never reused, OPTIONS that lists a path's methods, and a blank token refused for a public bind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from api.shared.settings import Settings
from tests.live import ROOT, running_server
from tests.services import pg_schema_url
from tests.trust.hostile import send_hostile

TRAIN = {"kind": "train", "spec": {"model": "digits-cnn", "dataset": "digits", "epochs": 1, "batch_size": 256}}
BIG_ID = 3_000_000_000  # past 2**31: int4 overflows, int8 does not


@pytest.fixture(params=["sqlite", "postgresql"])
def store_env(request: pytest.FixtureRequest) -> dict[str, str]:
    if request.param == "sqlite":
        return {}
    return {"PRUNESCOPE_DATABASE_URL": pg_schema_url(request.getfixturevalue("pg_database"))}


@pytest.mark.slow
def test_ids_are_never_reused(tmp_path: Path, store_env: dict[str, str]) -> None:
    with running_server(tmp_path / "data", **store_env) as server:
        first = server.post("/api/v1/jobs", TRAIN)
        assert server.wait_job(first["id"])["status"] == "succeeded"
        assert httpx.delete(f"{server.url}/api/v1/jobs/{first['id']}", timeout=30).status_code == 204
        second = server.post("/api/v1/jobs", TRAIN)
        assert second["id"] > first["id"], "a deleted job's id was handed out again"
        server.wait_job(second["id"])


@pytest.mark.timing  # promises an answer within a time bound: run alone (make test's second phase)
def test_ids_are_64_bit(tmp_path: Path, store_env: dict[str, str]) -> None:
    with running_server(tmp_path / "data", **store_env) as server:
        # An id past 2**31 is an unknown job (404), not "integer out of range" (422).
        outcome = send_hostile(server.url, lambda c: c.get(f"/api/v1/jobs/{BIG_ID}"))
        outcome.assert_refused(404, names=(str(BIG_ID),))
        # ...and a row that has one is served: the column really holds 64 bits.
        url = store_env.get("PRUNESCOPE_DATABASE_URL") or f"sqlite:///{tmp_path / 'data' / 'prunescope.db'}"
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO experiments (id, name, description, tags, created_at) "
                              "VALUES (:id, 'big', '', '[]', CURRENT_TIMESTAMP)"), {"id": BIG_ID})
        engine.dispose()
        assert server.get(f"/api/v1/experiments/{BIG_ID}")["name"] == "big"
        outcome = send_hostile(server.url, lambda c: c.get(f"/api/v1/jobs/{2**63}"))
        outcome.assert_refused(422)


def test_sqlite_upgrade_from_0003_keeps_every_row(tmp_path: Path) -> None:
    """The AUTOINCREMENT rebuild runs with foreign keys off: no child row is cascade-deleted."""
    from alembic import command

    from api.store.db import alembic_config, make_engine, migrate

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
        conn.execute(text("INSERT INTO jobs (id, kind, spec, status, progress_done, progress_total, "
                          "cancel_requested, shards_total, created_at) VALUES "
                          "(7, 'sensitivity', '{}', 'succeeded', 1, 1, 0, 1, CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO job_shards (job_id, \"index\", status, attempts) VALUES (7, 0, 'succeeded', 1)"))
        conn.execute(text("INSERT INTO sensitivity_points (job_id, parameter, sparsity, top1, top5, loss, measured, "
                          "approximate, subset, \"group\", mode, created_at) VALUES (7, 'fc.weight', 0.5, 1, 2, 3, "
                          "1, 0, 0, 'element', 'independent', CURRENT_TIMESTAMP)"))
    migrate(engine)
    with engine.connect() as conn:
        from alembic.script import ScriptDirectory

        head = ScriptDirectory.from_config(cfg).get_current_head()
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == head
        assert conn.execute(text("SELECT count(*) FROM job_shards WHERE job_id = 7")).scalar() == 1
        assert conn.execute(text("SELECT count(*) FROM sensitivity_points WHERE job_id = 7")).scalar() == 1
        schema = conn.execute(text("SELECT sql FROM sqlite_master WHERE name = 'jobs'")).scalar()
        assert "AUTOINCREMENT" in schema
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1, "foreign keys left off"
        conn.execute(text("DELETE FROM jobs WHERE id = 7"))
        conn.commit()
        assert conn.execute(text("SELECT count(*) FROM sensitivity_points")).scalar() == 0, "cascade lost"
    engine.dispose()


def test_options_lists_the_methods_of_each_path(tmp_path: Path) -> None:
    with running_server(tmp_path / "data") as server:
        cases = {"/api/v1/jobs": {"GET", "POST", "OPTIONS"}, "/api/v1/jobs/1": {"GET", "PATCH", "DELETE", "OPTIONS"},
                 "/api/v1/jobs/1/cancel": {"POST", "OPTIONS"}, "/": {"GET", "HEAD", "OPTIONS"}}
        for path, methods in cases.items():
            outcome = send_hostile(server.url, lambda c, p=path: c.options(p))
            assert outcome.response is not None and outcome.response.status_code == 204, (path, outcome.response)
            allow = {m.strip() for m in outcome.response.headers["allow"].split(",")}
            assert allow == methods, (path, allow)
            outcome.assert_healthy()


@pytest.mark.parametrize("token", [" ", "\t\n", "   "])
def test_blank_token_is_refused(token: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="blank"):
        Settings(token=token)
    env = {**os.environ, "PRUNESCOPE_TOKEN": token, "PRUNESCOPE_DATA_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "api.cli", "serve", "--host", "0.0.0.0", "--port", "0",
                           "--no-demo"], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode != 0
    assert "PRUNESCOPE_TOKEN is blank" in proc.stderr + proc.stdout
