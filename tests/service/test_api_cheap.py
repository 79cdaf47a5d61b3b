"""The probes and the list stay cheap without changing what they say (issue 20): ``/healthz`` reuses each
check's answer for its interval, yet shows a broker outage (a real Redis behind a proxy that is cut) once
the interval is over, and the recovery the same way; ``GET /jobs`` runs a fixed number of SQL statements
whatever the page size, answers exactly what the plain ORM path (:func:`api.jobs.job_page`) answers, and
serves an unchanged page from its cache while any change, made by any session, shows at once."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, update

from api.app import create_app
from api.jobs import job_page
from api.routes.health import CheckCache
from api.shared.dispatch import CeleryDispatcher
from api.shared.settings import Settings
from api.store import repo
from api.store.models import Experiment, Job
from tests.apps import make_app

# ----------------------------------------------------------------------------------------------
# /healthz: cached answers, a real outage
# ----------------------------------------------------------------------------------------------


class Proxy:
    """A TCP proxy to Redis on a fixed local port; ``cut()`` closes it and every connection (the broker is
    unreachable: refused), ``restore()`` listens again on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target, self.port = target, 0
        self._open: list[socket.socket] = []
        self._listener: socket.socket | None = None

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self.port, self._listener = listener.getsockname()[1], listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        for s in [self._listener, *self._open]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass


def test_healthz_reuses_answers_and_shows_an_outage_after_the_interval(sqlite_settings: Settings,
                                                                        redis_url: str) -> None:
    host, port = redis_url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)
    proxy = Proxy((host, int(port)))
    proxy.restore()
    now = [0.0]
    dispatcher = CeleryDispatcher(f"redis://127.0.0.1:{proxy.port}/15", 60, "prunescope-cheap-test")
    try:
        with TestClient(create_app(sqlite_settings, dispatcher=dispatcher)) as c:
            c.app.state.health_cache = CheckCache(ttl_s=5.0, clock=lambda: now[0])

            def probe() -> tuple[int, dict]:
                r = c.get("/healthz")
                return r.status_code, r.json()

            status, up = probe()
            assert status == 200 and up["broker"]["ok"] and up["store"]["ok"]
            proxy.cut()
            assert probe() == (200, up)  # within the interval: the answer already taken, no round trip
            now[0] += 5.0
            status, down = probe()
            assert status == 503 and down["ok"] is False and down["broker"]["ok"] is False
            assert "unreachable" in down["broker"]["detail"] and down["store"]["ok"]
            proxy.restore()
            assert probe()[0] == 503  # the failure is reused for its interval too
            now[0] += 5.0
            status, back = probe()
            assert status == 200 and back["broker"] == up["broker"]
    finally:
        proxy.cut()


# ----------------------------------------------------------------------------------------------
# GET /jobs: bounded statements, the plain path's answer, a cache that never serves a stale page
# ----------------------------------------------------------------------------------------------

N_JOBS = 30


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    """The app on each store with ``N_JOBS`` jobs of every kind: named, tagged, finished, in an experiment,
    a sensitivity job with a measured baseline."""
    with TestClient(make_app(settings)) as c:
        with c.app.state.session_factory() as s:
            exp = Experiment(name="Sweep", description="", tags=[])
            s.add(exp)
            s.flush()
            for i in range(N_JOBS):
                job = repo.create_job(s, kind=("sensitivity", "prune", "train")[i % 3],
                                      spec={"model": "digits-cnn", "dataset": "digits", "levels": [0, 0.5]},
                                      experiment_id=exp.id if i % 4 == 0 else None, code_version="v1")
                if i % 3 == 1:
                    repo.merge_result(s, job.id, {"name": f"run {i}", "tags": ["a", "b"], "final": {"top1": 90.5},
                                                  "baseline": {"top1": 97}, "sparsity": 0.5})
                if i == 3:
                    repo.upsert_point(s, job.id, {"parameter": "a.weight", "sparsity": 0.0, "top1": 91.25},
                                      shard=0, worker="t")
            s.commit()
            s.execute(update(Job).where(Job.id % 5 == 0).values(status="succeeded", cancel_requested=True,
                                                                 started_at=repo.utcnow(), finished_at=repo.utcnow(),
                                                                 worker="w1", device="cpu", error="boom"))
            s.commit()
        yield c


def plain(c: TestClient, **params: object) -> dict:
    """What the ORM path answers (each item a JobOut dump plus its numbers), as JSON."""
    with c.app.state.session_factory() as s:
        return json.loads(json.dumps(job_page(s, params.get("status"), params.get("kind"), None,
                                              int(params.get("limit", 50)), int(params.get("offset", 0)),
                                              search=params.get("q"), sort=str(params.get("sort", "-id")))))


LISTS = [{}, {"limit": 7, "offset": 7}, {"limit": 5, "offset": 28}, {"limit": 5, "offset": 100},
         {"sort": "model"}, {"sort": "-name", "limit": 9}, {"kind": "sensitivity"}, {"status": "succeeded"},
         {"q": "run 1"}, {"q": "sweep"}, {"sort": "finished", "status": "succeeded"}]


def test_the_list_answers_what_the_plain_path_answers(api: TestClient) -> None:
    for params in LISTS:
        for _ in range(2):  # built, then from the cache
            r = api.get("/api/v1/jobs", params=params)
            assert r.status_code == 200, r.text
            assert r.json() == plain(api, **params), params
    numbers = {j["id"]: j["numbers"] for j in api.get("/api/v1/jobs").json()["items"]}
    assert numbers[4]["baseline_top1"] == 91.25 and numbers[5]["final_top1"] == 90.5


def test_the_list_runs_a_bounded_number_of_statements(api: TestClient) -> None:
    statements: list[str] = []

    def seen(*args: object) -> None:  # the request's statements, not the reaper's (a thread of its own)
        if not threading.current_thread().name.startswith("prunescope-"):
            statements.append(str(args[2]))

    event.listen(api.app.state.engine, "before_cursor_execute", seen)
    counts = {}
    for limit in (1, 5, 30, 1000):
        for read in ("built", "cached"):
            statements.clear()
            assert len(api.get("/api/v1/jobs", params={"limit": limit}).json()["items"]) == min(limit, N_JOBS)
            counts[limit, read] = len(statements)
    # built: the page (with its total), the sensitivity baselines; cached: none (the change count alone, read on
    # the event loop outside the engine)
    assert max(v for (_, read), v in counts.items() if read == "built") <= 2, counts
    assert all(v == 0 for (_, read), v in counts.items() if read == "cached"), counts


def test_a_change_by_any_session_shows_at_once_and_etags_follow(api: TestClient) -> None:
    first = api.get("/api/v1/jobs", params={"limit": 10})
    etag = first.headers["etag"]
    assert api.get("/api/v1/jobs", params={"limit": 10}, headers={"If-None-Match": etag}).status_code == 304
    with api.app.state.session_factory() as s:  # as a worker process would: straight to the store
        s.execute(update(Job).where(Job.id == N_JOBS).values(progress_done=3, heartbeat_at=repo.utcnow()))
        s.commit()
    changed = api.get("/api/v1/jobs", params={"limit": 10}, headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert changed.json() == plain(api, limit=10) != first.json()
    assert changed.json()["items"][0]["progress_done"] == 3
    assert api.patch(f"/api/v1/jobs/{N_JOBS}", json={"name": "renamed"}).status_code == 200
    assert api.get("/api/v1/jobs", params={"limit": 10}).json()["items"][0]["result"]["name"] == "renamed"


def test_the_list_answers_from_its_session_when_the_change_count_cannot_be_read(api: TestClient,
                                                                                tmp_path: Path) -> None:
    from sqlalchemy import create_engine

    from api.store.changes import RETRY_AFTER_S, ChangeCount

    assert api.get("/api/v1/jobs").status_code == 200
    with api.app.state.session_factory() as s:
        stored = repo.store_changes(s)

    async def once(reader: ChangeCount) -> int | None:
        try:
            return await reader.read()
        finally:
            await reader.close()

    assert asyncio.run(once(ChangeCount(api.app.state.engine))) == stored
    broken = ChangeCount(create_engine(f"sqlite:///{tmp_path / 'missing' / 'nowhere.db'}"))
    assert asyncio.run(once(broken)) is None

    async def recovering() -> tuple[int | None, ...]:  # fails, waits out RETRY_AFTER_S, then reads again
        reader = ChangeCount(create_engine(f"sqlite:///{tmp_path / 'missing' / 'nowhere.db'}"))
        failed = await reader.read()
        reader.url, reader.dialect = api.app.state.engine.url, api.app.state.engine.dialect.name  # back...
        backing_off = await reader.read()  # ...but within RETRY_AFTER_S requests take the fallback at once
        reader._failed_at -= RETRY_AFTER_S
        try:
            return failed, backing_off, await reader.read()
        finally:
            await reader.close()

    assert asyncio.run(recovering()) == (None, None, stored)
    api.app.state.change_count = broken
    for params in LISTS[:3]:
        r = api.get("/api/v1/jobs", params=params)
        assert r.status_code == 200 and r.json() == plain(api, **params), params
