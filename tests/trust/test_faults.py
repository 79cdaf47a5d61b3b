"""Faults against the real services (issue 9): the broker restarted, the API restarted, PostgreSQL
unreachable, the artifacts disk full or read-only, a worker dead before it restarts. In every case the
job ends with every point exactly once, or fails with a clear stored error; nothing stored is lost;
nothing hangs (stale shards are found by heartbeat and re-dispatched).

A worker SIGKILLed mid-shard is tested in tests/service/test_e2e.py::test_sigkill_a_worker_mid_job.
The machine's shared Redis and PostgreSQL are never stopped: the broker is a private redis-server on
a free port, and PostgreSQL outages go through a TCP proxy this test owns.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from tests.service.stack import Stack, free_port
from tests.services import PG_HOST, PG_PORT, pg_schema_url
from worker.executor import Executor

pytestmark = pytest.mark.slow
PARAMS = ["conv1.weight", "layer1.*.conv*.weight", "layer3.2.conv2.weight", "fc.weight"]  # 9 weights
SPEC = {"model": "resnet20-cifar", "dataset": "synthetic", "dataset_options": {"n": 32}, "levels": "0,0.3,0.6,0.9",
        "batch_size": 32, "params": PARAMS, "shards": 3}
EXPECTED = 9 * 4


def assert_exactly_once(points: list[dict]) -> None:
    keys = [(p["parameter"], p["sparsity"]) for p in points]
    assert len(keys) == EXPECTED == len(set(keys)), f"{len(keys)} points, {len(set(keys))} distinct"


class RedisServer:
    """A private, non-persistent redis-server we may kill and restart (never the shared one)."""

    def __init__(self, tmp: Path) -> None:
        self.port, self.tmp, self.proc = free_port(), tmp, None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed")
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no",
                                      "--bind", "127.0.0.1", "--dir", str(self.tmp)], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            time.sleep(0.1)
        raise AssertionError("the private redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


class PausableProxy:
    """A TCP proxy to PostgreSQL: ``outage()`` drops every connection and refuses new ones for a while."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._closing = False

    def start(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # listener closed: the outage (or the end)
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def outage(self, seconds: float) -> None:
        """Refuse and cut everything for ``seconds``, then accept again on the same port."""
        assert self._listener is not None
        self._listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
                s.close()
        time.sleep(seconds)
        self.start()

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()


def _stack(tmp: Path, db_url: str, broker: str) -> Stack:
    env = {**os.environ, "PRUNESCOPE_DATABASE_URL": db_url, "PRUNESCOPE_BROKER_URL": broker,
           "PRUNESCOPE_DATA_DIR": str(tmp / "data"), "PRUNESCOPE_HEARTBEAT_STALE_S": "4",
           "PRUNESCOPE_QUEUE": f"prunescope-faults-{uuid.uuid4().hex[:8]}", "PRUNESCOPE_TORCH_THREADS": "1"}
    env.pop("PRUNESCOPE_TOKEN", None)
    return Stack(env, tmp, SPEC)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()


def _some_points(stack: Stack, job_id: int, n: int = 3) -> None:
    stack.wait(lambda: len(stack.points(job_id)) >= n, 50, f"{n} points of job {job_id}")


def test_broker_restarted_mid_job(pg_database: str, private_redis: RedisServer, tmp_path: Path) -> None:
    """Redis dies with the queued shards in it (no persistence) and comes back empty: the running
    shard finishes, the lost messages are re-sent by the API's reaper, the worker reconnects."""
    stack = _stack(tmp_path, pg_schema_url(pg_database), private_redis.url)
    try:
        stack.serve()
        stack.start("worker")
        job_id = stack.submit()
        _some_points(stack, job_id)
        private_redis.kill()
        time.sleep(3)
        private_redis.start()
        job = stack.finished(job_id, timeout=55)
        assert job["status"] == "succeeded", job
        assert_exactly_once(stack.points(job_id))
    finally:
        stack.stop()


def test_job_submitted_while_the_broker_is_down(pg_database: str, private_redis: RedisServer,
                                                 tmp_path: Path) -> None:
    """POST /jobs with Redis down still answers 201 (the job row is the truth); once Redis is back,
    the reaper sends the never-sent shards and the job succeeds with every point once."""
    stack = _stack(tmp_path, pg_schema_url(pg_database), private_redis.url)
    try:
        stack.serve()
        private_redis.kill()
        job_id = stack.submit()  # asserts 201
        assert stack.job(job_id)["status"] == "queued"
        private_redis.start()
        stack.start("worker")
        job = stack.finished(job_id, timeout=55)
        assert job["status"] == "succeeded", job
        assert_exactly_once(stack.points(job_id))
    finally:
        stack.stop()


def test_api_restarted_mid_job(pg_database: str, redis_url: str, tmp_path: Path) -> None:
    """The API is SIGKILLed while a worker runs the job and restarted: the job carries on; the new
    API sees the same state and every point once."""
    stack = _stack(tmp_path, pg_schema_url(pg_database), redis_url)
    try:
        api = stack.serve()
        stack.start("worker")
        job_id = stack.submit()
        _some_points(stack, job_id)
        before = {(p["parameter"], p["sparsity"]) for p in stack.points(job_id)}
        api.send_signal(signal.SIGKILL)
        api.wait(10)
        stack.serve()
        assert before <= {(p["parameter"], p["sparsity"]) for p in stack.points(job_id)}
        job = stack.finished(job_id, timeout=55)
        assert job["status"] == "succeeded", job
        assert_exactly_once(stack.points(job_id))
    finally:
        stack.stop()
        _drop_queue(redis_url, stack)


def test_postgres_unreachable_for_seconds(pg_database: str, redis_url: str, tmp_path: Path) -> None:
    """Every connection to PostgreSQL is cut and refused for 6 s (longer than the 4 s heartbeat
    staleness) mid-job: store writes retry with backoff, the pool pre-pings, the job completes."""
    proxy = PausableProxy(PG_HOST, PG_PORT)
    proxy.start()
    url = pg_schema_url(pg_database).replace(f"@{PG_HOST}:{PG_PORT}/", f"@127.0.0.1:{proxy.port}/")
    stack = _stack(tmp_path, url, redis_url)
    try:
        stack.serve()
        stack.start("worker")
        job_id = stack.submit()
        _some_points(stack, job_id)
        stored = {(p["parameter"], p["sparsity"]): p["top1"] for p in stack.points(job_id)}
        proxy.outage(6)
        job = stack.finished(job_id, timeout=55)
        assert job["status"] == "succeeded", job
        points = stack.points(job_id)
        assert_exactly_once(points)
        after = {(p["parameter"], p["sparsity"]): p["top1"] for p in points}
        assert {k: after[k] for k in stored} == stored  # nothing stored before the outage was lost or changed
    finally:
        stack.stop()
        proxy.stop()
        _drop_queue(redis_url, stack)


def test_worker_startup_redispatches_an_orphan(pg_database: str, redis_url: str, tmp_path: Path) -> None:
    """A shard left 'running' by a worker that died with nobody watching (no API, its message gone):
    the next `prunescope worker` sends it again at startup and finishes the job."""
    from api.store import make_engine, make_session_factory, migrate, repo
    from api.store.models import JobShard, utcnow

    db_url = pg_schema_url(pg_database)
    engine = make_engine(db_url)
    migrate(engine)
    with make_session_factory(engine)() as s:
        job = repo.create_job(s, kind="sensitivity", spec={**SPEC, "levels": [0.0, 0.5], "shards": 1,
                                                            "dataset_options": {"n": 32}}, shards=1)
        s.commit()
        assert repo.claim_shard(s, job.id, 0, worker="ghost:1:1", stale_s=4)
        s.execute(update(JobShard).where(JobShard.job_id == job.id)
                  .values(heartbeat_at=utcnow() - timedelta(minutes=5)))
        s.commit()
        job_id = job.id
    engine.dispose()
    stack = _stack(tmp_path, db_url, redis_url)
    try:
        stack.start("worker")  # no API: only the worker's startup pass can find the orphan
        done = stack.wait(lambda: (status := _job_status(db_url, job_id)) in ("succeeded", "failed") and status,
                          55, "the orphaned job to finish")
        assert done == "succeeded"
    finally:
        stack.stop()
        _drop_queue(redis_url, stack)


def _job_status(db_url: str, job_id: int) -> str | None:
    from sqlalchemy import create_engine, select

    from api.store.models import Job

    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return conn.execute(select(Job.status).where(Job.id == job_id)).scalar()
    finally:
        engine.dispose()


def _drop_queue(redis_url: str, stack: Stack) -> None:
    import redis

    redis.Redis.from_url(redis_url).delete(stack.env["PRUNESCOPE_QUEUE"])


# -- the artifacts disk ---------------------------------------------------------------------------

@contextlib.contextmanager
def small_disk(path: Path) -> Iterator[str]:
    """A 1 MiB tmpfs mounted at ``path`` (needs root); skips where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({proc.stderr.strip()}): run the fault tests as root")
    try:
        yield str(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_artifacts_disk_full_or_read_only(fault: str, pg_database: str, tmp_path: Path) -> None:
    """A train job whose checkpoint cannot be written fails with a stored error that says which file
    and why; its epochs stay stored; no artifact row or half-written file is left; once the disk is
    writable again a job succeeds."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.shared.settings import Settings

    settings = Settings(data_dir=tmp_path / "data", database_url=pg_schema_url(pg_database), heartbeat_stale_s=10,
                        torch_threads=1)
    artifacts = settings.artifacts_dir
    spec = {"model": "digits-cnn", "dataset": "digits", "epochs": 1, "batch_size": 128}
    with small_disk(artifacts), TestClient(create_app(settings, dispatcher=Executor),
                                           base_url="http://t/api/v1") as api:
        if fault == "full":
            filler = artifacts / "filler"
            with open(filler, "wb") as fh, contextlib.suppress(OSError):
                fh.write(b"\0" * (2 << 20))
            expected = "No space left on device"
        else:
            subprocess.run(["mount", "-o", "remount,ro", str(artifacts)], check=True)
            expected = "Read-only file system"
        job_id = api.post("/jobs", json={"kind": "train", "spec": spec}).json()["id"]
        job = _wait_api(api, job_id)
        assert job["status"] == "failed"
        assert "cannot write checkpoint artifact" in job["error"] and expected in job["error"], job["error"]
        assert len(api.get(f"/jobs/{job_id}/epochs").json()) == 1  # what was stored stays
        assert api.get(f"/jobs/{job_id}/artifacts").json() == []
        assert not [p for p in artifacts.iterdir() if p.name != "filler"]
        if fault == "full":
            filler.unlink()
        else:
            subprocess.run(["mount", "-o", "remount,rw", str(artifacts)], check=True)
        retry = api.post("/jobs", json={"kind": "train", "spec": spec}).json()["id"]
        assert _wait_api(api, retry)["status"] == "succeeded"


def _wait_api(api: object, job_id: int, timeout: float = 50) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.get(f"/jobs/{job_id}").json()  # type: ignore[attr-defined]
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s")
