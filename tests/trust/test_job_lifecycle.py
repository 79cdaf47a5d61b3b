"""Jobs whose worker is gone (issue 13, findings 7 and 8): a cancel is honoured and a delete allowed
once no live worker holds the job, and one embedded server per data directory.

The live tests cancel a job and SIGKILL its runner before the runner can read the flag. They make that
deterministic, not lucky: the fast sensitivity engine stores a parameter's points in one burst and then
spends seconds on the next parameter, so the cancel is sent right after a burst has landed (the runner
checks the flag only when it stores a point), and each test asserts that premise in the store.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from api.app import create_app
from api.shared.dispatch import redispatch_orphans
from api.shared.settings import Settings
from api.store import make_engine, make_session_factory, migrate, repo
from api.store.datadir_lock import LOCK_NAME, DataDirLock, DataDirLocked
from api.store.models import Job, JobShard, utcnow
from tests.apps import RecordingDispatcher, make_app
from tests.live import ROOT, Server, free_port, running_server, server_command
from tests.service.stack import Stack
from tests.services import pg_schema_url
from tests.trust.hostile import send_hostile
from worker.executor import Executor

pytestmark = pytest.mark.timing  # promises an answer within a time bound: run alone (make test's second phase)

# A long job: 18 convolutions x 8 levels; each parameter's 8 points take seconds on one thread.
LEVELS = "0,0.1,0.2,0.3,0.4,0.5,0.6,0.7"
LONG_SPEC = {"model": "resnet20-cifar", "dataset": "synthetic", "dataset_options": {"n": 256}, "levels": LEVELS,
             "batch_size": 256, "params": ["layer*.*.conv*.weight"], "device": "cpu", "shards": 1}
LIVE_ENV = {"PRUNESCOPE_TORCH_THREADS": "1"}


# -- in process, on both stores -------------------------------------------------------------------

def _running_job(factory, worker: str = "w1", *, stale: bool = False) -> int:  # noqa: ANN001 - a sessionmaker
    """A sensitivity job whose one shard ``worker`` claimed; ``stale``: its heartbeat is a minute old."""
    with factory() as s:
        job = repo.create_job(s, kind="sensitivity", spec={})
        s.commit()
        assert repo.claim_shard(s, job.id, 0, worker=worker, stale_s=5)
        if stale:
            _age_heartbeat(s, job.id)
        return job.id


def _age_heartbeat(session, job_id: int) -> None:  # noqa: ANN001 - a Session
    session.execute(update(JobShard).where(JobShard.job_id == job_id)
                    .values(heartbeat_at=utcnow() - timedelta(seconds=60)))
    session.commit()


def test_cancel_and_delete_follow_the_heartbeat(settings: Settings) -> None:
    """Finding 7 at the REST level: a cancel on a job whose shards are all stale ends it at once; a live
    holder keeps a job running on cancel and makes DELETE a 409 that says what to do; once its heartbeat
    is stale the job can be deleted (cancelled, then deleted)."""
    with TestClient(make_app(settings)) as c:
        factory = c.app.state.session_factory
        orphan = _running_job(factory, stale=True)
        r = c.post(f"/api/v1/jobs/{orphan}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
        assert c.get(f"/api/v1/jobs/{orphan}").json()["shards"][0]["status"] == "cancelled"

        held = _running_job(factory, "w2")
        r = c.delete(f"/api/v1/jobs/{held}")
        assert r.status_code == 409, r.text
        assert all(w in r.json()["detail"] for w in (f"job {held}", "w2", "cancel it first", "HEARTBEAT_STALE_S"))
        r = c.post(f"/api/v1/jobs/{held}/cancel")
        assert r.json()["status"] == "running" and r.json()["cancel_requested"], r.text  # the runner will stop it
        r = c.delete(f"/api/v1/jobs/{held}")
        assert r.status_code == 409 and "delete it once it has stopped" in r.json()["detail"], r.text
        with factory() as s:
            _age_heartbeat(s, held)
        assert c.delete(f"/api/v1/jobs/{held}").status_code == 204
        assert c.get(f"/api/v1/jobs/{held}").status_code == 404

        never_cancelled = _running_job(factory, "w3", stale=True)  # no cancel asked: DELETE alone suffices
        assert c.delete(f"/api/v1/jobs/{never_cancelled}").status_code == 204


def test_reaper_pass_ends_orphaned_cancels(settings: Settings) -> None:
    """The reaper's pass ends a cancel-requested job whose worker is gone instead of re-dispatching it,
    leaves one a live worker holds to its runner, and re-dispatches a stale job nobody cancelled; the
    embedded start-up pass (all_active) ends every cancel-requested job whatever its heartbeat."""
    engine = make_engine(settings.db_url)
    migrate(engine)
    factory = make_session_factory(engine)
    gone, live, orphan = (_running_job(factory, w, stale=w != "live") for w in ("gone", "live", "orphan"))
    with factory() as s:
        for job_id in (gone, live):
            s.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
        s.commit()
    sent = RecordingDispatcher()
    assert redispatch_orphans(sent, factory, stale_s=5) == [(orphan, 0)]
    with factory() as s:
        status = dict(s.execute(select(Job.id, Job.status)).all())
        assert status == {gone: "cancelled", live: "running", orphan: "running"}
        assert s.scalar(select(JobShard.status).where(JobShard.job_id == gone)) == "cancelled"
    assert redispatch_orphans(sent, factory, stale_s=5, all_active=True) == [(orphan, 0)]
    with factory() as s:
        assert s.get(Job, live).status == "cancelled"
    assert sent.sent == [(orphan, 0), (orphan, 0)]
    engine.dispose()


def test_one_embedded_app_per_data_dir_in_process(tmp_path: Path) -> None:
    """TestClient and Client.local() apps take the lock for their lifespan: a second one over the same
    folder is refused naming this pid; a closed one frees it; a broker-mode app never takes it."""
    from api.client import Client

    cfg = Settings(data_dir=tmp_path / "data", database_url="", broker_url="", token="")
    with TestClient(create_app(cfg, dispatcher=Executor)):
        assert f'"pid": {os.getpid()}' in (cfg.data_dir / LOCK_NAME).read_text()
        with pytest.raises(DataDirLocked, match=f"pid {os.getpid()} .*PRUNESCOPE_DATA_DIR"), \
                TestClient(create_app(cfg, dispatcher=Executor)):
            pass
        with pytest.raises(DataDirLocked, match=str(cfg.data_dir)):
            Client.local(cfg.data_dir, progress=False)
        with TestClient(make_app(cfg)) as c:  # not the embedded executor
            assert c.get("/healthz").status_code == 200
    with Client.local(cfg.data_dir, progress=False) as local:  # freed when the first app shut down
        assert local.health()["broker"]["kind"] == "embedded"
    DataDirLock(cfg.data_dir).acquire().release()


# -- live servers ---------------------------------------------------------------------------------

def _job(base: str, job_id: int) -> dict:
    return httpx.get(f"{base}/api/v1/jobs/{job_id}", timeout=10).json()


def _wait(check, timeout_s: float, what: str):  # noqa: ANN001, ANN202 - any truthy value
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def _between_bursts(base: str, job_id: int, after: int = 0) -> dict:
    """Wait until a parameter's points, past the first ``after``, have all just landed (the runner read
    the flag as it stored the last of them and is now seconds into the next parameter); return the job."""
    def ready() -> dict | None:
        job = _job(base, job_id)
        per_param = len(job["spec"]["levels"])
        done = job["progress_done"]
        return job if job["status"] == "running" and done > after and done % per_param == 0 else None

    return _wait(ready, 120, f"job {job_id} to store a parameter's points")


def _store_job(url: str, job_id: int) -> tuple[Job, list[JobShard]]:
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as s:
            job = s.get(Job, job_id)
            shards = s.scalars(select(JobShard).where(JobShard.job_id == job_id)).all()
            s.expunge_all()
            return job, list(shards)
    finally:
        engine.dispose()


def _submit(base: str, spec: dict) -> int:
    r = httpx.post(f"{base}/api/v1/jobs", json={"kind": "sensitivity", "spec": spec}, timeout=30)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _sigkill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


@pytest.mark.slow
def test_cancelled_then_killed_embedded_job_ends_cancelled_after_restart(tmp_path: Path) -> None:
    """Finding 7, embedded: cancel a running job and SIGKILL the server before the runner reads the flag;
    the restarted server ends it cancelled (never resumes it), and it can be deleted."""
    data = tmp_path / "data"
    with running_server(data, **LIVE_ENV) as first:
        job_id = _submit(first.url, LONG_SPEC)
        before = _between_bursts(first.url, job_id)
        r = httpx.post(f"{first.url}/api/v1/jobs/{job_id}/cancel", timeout=10)
        _sigkill(first.process)
        assert r.status_code == 200 and r.json()["cancel_requested"], r.text
    job, shards = _store_job(f"sqlite:///{data / 'prunescope.db'}", job_id)
    assert (job.status, job.cancel_requested, shards[0].status) == ("running", True, "running"), \
        "premise: the server died before its runner read the cancel flag"
    points = job.progress_done
    assert points == before["progress_done"]

    started = time.monotonic()
    with running_server(data, **LIVE_ENV) as second:
        job = _wait(lambda: (j := _job(second.url, job_id))["status"] != "running" and j, 5, "the job to settle")
        took = time.monotonic() - started
        assert job["status"] == "cancelled" and job["finished_at"], job
        assert [(s["status"], s["attempts"]) for s in job["shards"]] == [("cancelled", 1)], "it was resumed"
        time.sleep(1)
        assert len(httpx.get(f"{second.url}/api/v1/jobs/{job_id}/points", timeout=10).json()) == points
        outcome = send_hostile(second.url, lambda c: c.delete(f"/api/v1/jobs/{job_id}"))
        assert outcome.response is not None and outcome.response.status_code == 204, outcome.response.text
        assert outcome.seconds < 1.0
        outcome.assert_healthy()
        assert httpx.get(f"{second.url}/api/v1/jobs/{job_id}", timeout=10).status_code == 404
    print(f"embedded restart to 'cancelled': {took:.1f} s (server start included)")


@pytest.fixture
def distributed(pg_database: str, redis_url: str, tmp_path: Path) -> Iterator[Stack]:
    queue = f"prunescope-lifecycle-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PRUNESCOPE_DATABASE_URL": pg_schema_url(pg_database), "PRUNESCOPE_BROKER_URL": redis_url,
           "PRUNESCOPE_DATA_DIR": str(tmp_path / "data"), "PRUNESCOPE_HEARTBEAT_STALE_S": "3",
           "PRUNESCOPE_QUEUE": queue, **LIVE_ENV}
    env.pop("PRUNESCOPE_TOKEN", None)
    stack = Stack(env, tmp_path, LONG_SPEC)
    yield stack
    stack.stop()
    import redis

    redis.Redis.from_url(redis_url).delete(queue)


@pytest.mark.slow
def test_cancelled_then_killed_worker_is_reaped_as_cancelled(distributed: Stack) -> None:
    """Finding 7, distributed: DELETE of a job a live worker holds is a 409 that says to cancel first;
    cancel, SIGKILL the worker before it reads the flag: the reaper ends the job cancelled once the
    heartbeat is stale (3 s here), and DELETE then works."""
    distributed.serve()
    worker = distributed.start("worker")
    base = f"http://127.0.0.1:{distributed.port}"
    job_id = _submit(base, LONG_SPEC)
    seen = _between_bursts(base, job_id)["progress_done"]
    outcome = send_hostile(base, lambda c: c.delete(f"/api/v1/jobs/{job_id}"))
    outcome.assert_refused(409, names=(f"job {job_id}", "live worker", f":{worker.pid}", "cancel it first"))

    _between_bursts(base, job_id, after=seen)
    r = httpx.post(f"{base}/api/v1/jobs/{job_id}/cancel", timeout=10)
    _sigkill(worker)
    assert r.status_code == 200 and r.json()["cancel_requested"], r.text
    job = _job(base, job_id)
    assert (job["status"], job["shards"][0]["status"]) == ("running", "running"), "premise: killed before the flag"

    killed = time.monotonic()
    job = _wait(lambda: (j := _job(base, job_id))["status"] != "running" and j, 20, "the reaper to settle the job")
    took = time.monotonic() - killed
    assert job["status"] == "cancelled" and job["shards"][0]["status"] == "cancelled", job
    assert took >= 1.0, f"ended {took:.1f} s after the kill: before its 3 s heartbeat could be stale"
    outcome = send_hostile(base, lambda c: c.delete(f"/api/v1/jobs/{job_id}"))
    assert outcome.response is not None and outcome.response.status_code == 204, outcome.response.text
    assert outcome.seconds < 1.0
    outcome.assert_healthy()
    print(f"worker SIGKILL to 'cancelled' by the reaper: {took:.1f} s (stale after 3 s)")


@pytest.mark.slow
def test_second_embedded_server_on_a_data_dir_exits(tmp_path: Path) -> None:
    """Finding 8: a second embedded server over a live one's data dir exits non-zero at once, naming the
    dir and the holder's pid, and the live server's running shard is not run again; once the holder is
    SIGKILLed (no clean-up at all) a new server starts over the same dir and resumes the shard."""
    data = tmp_path / "data"
    with running_server(data, **LIVE_ENV) as first:
        job_id = _submit(first.url, LONG_SPEC)
        seen = _between_bursts(first.url, job_id)["progress_done"]
        env = {**os.environ, "PRUNESCOPE_DATA_DIR": str(data), "PYTHONPATH": str(ROOT), **LIVE_ENV}
        for key in ("PRUNESCOPE_DATABASE_URL", "PRUNESCOPE_BROKER_URL", "PRUNESCOPE_TOKEN"):
            env.pop(key, None)
        started = time.monotonic()
        second = subprocess.run(server_command(free_port()), cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=60)
        took = time.monotonic() - started
        assert second.returncode != 0, second.stdout + second.stderr
        for name in (str(data), f"pid {first.process.pid}", "PRUNESCOPE_DATA_DIR"):
            assert name in second.stderr, (name, second.stderr)
        assert took < 10, f"the second server took {took:.1f} s to give up"
        _between_bursts(first.url, job_id, after=seen)  # the first carries on, alone
        shard = _job(first.url, job_id)["shards"][0]
        assert (shard["status"], shard["attempts"], shard["worker"]) == \
            ("running", 1, f"embedded@{socket.gethostname()}:{first.process.pid}"), shard
        _sigkill(first.process)
    with running_server(data, **LIVE_ENV) as third:
        assert isinstance(third, Server)
        shard = _wait(lambda: (s := _job(third.url, job_id)["shards"][0])["attempts"] == 2 and s, 30,
                      "the new server to resume the shard")
        assert shard["worker"].endswith(f":{third.process.pid}") and shard["status"] == "running", shard
        assert httpx.post(f"{third.url}/api/v1/jobs/{job_id}/cancel", timeout=10).status_code == 200
    print(f"second embedded server refused in {took:.1f} s")
