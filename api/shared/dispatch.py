"""How a job's shards reach a runner: by task name over Celery, or to the in-process executor.

The API only hands over ``(job_id, shard)``; the worker reads everything else from SQL.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.orm import Session, sessionmaker

from api.store import repo

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger(__name__)


TASK_NAME = "prunescope.run_shard"


def make_celery(broker_url: str, visibility_timeout_s: int, queue: str = "prunescope") -> Celery:
    """The Celery app both sides use: the API sends :data:`TASK_NAME` with it, workers bind the runner to it."""
    from celery import Celery
    app = Celery("prunescope", broker=broker_url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue=queue,
        broker_transport_options={"visibility_timeout": visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_serializer="json",
        accept_content=["json"],
    )
    return app


class Dispatcher(Protocol):
    name: str

    def dispatch(self, job_id: int, shard: int) -> None: ...

    def healthy(self) -> tuple[bool, str]: ...


class CeleryDispatcher:
    """Enqueue by task name only, so the API never imports the worker's code (or torch)."""

    name = "celery"

    def __init__(self, broker_url: str, visibility_timeout_s: int, queue: str = "prunescope") -> None:
        self.broker_url, self.queue = broker_url, queue
        self.app = make_celery(broker_url, visibility_timeout_s, queue)
        self._redis: dict[float, Any] = {}

    def dispatch(self, job_id: int, shard: int) -> None:
        self.app.send_task(TASK_NAME, args=[job_id, shard])

    def _broker(self, timeout_s: float) -> Any:
        """A Redis client on the broker (its own connection pool), made once per timeout: probes and scrapes
        reuse a connection instead of opening one per call."""
        client = self._redis.get(timeout_s)
        if client is None:
            import redis

            client = self._redis[timeout_s] = redis.Redis.from_url(
                self.broker_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        return client

    def healthy(self) -> tuple[bool, str]:
        try:
            self._broker(2.0).ping()
            return True, f"redis ok ({self.broker_url})"
        except Exception as exc:  # noqa: BLE001 - any failure means "down", reported as text
            return False, f"broker {self.broker_url} unreachable: {exc}"

    def queue_depth(self) -> int:
        """Messages waiting in the broker's queue (raises when the broker is unreachable)."""
        return int(self._broker(1.0).llen(self.queue))


def dispatch_job(dispatcher: Dispatcher, job_id: int, shards: int) -> None:
    """Send every shard. The job row is already committed, so a broker outage is not the caller's
    error: the shards stay queued and the reaper sends them again once the broker is back."""
    for index in range(shards):
        try:
            dispatcher.dispatch(job_id, index)
        except Exception as exc:  # noqa: BLE001 - kombu/redis raise many types; all mean "not sent yet"
            log.warning("job %s shard %s not sent (%s); the reaper will send it again", job_id, index, exc)


def redispatch_orphans(
    dispatcher: Dispatcher, factory: sessionmaker[Session], *, stale_s: float, all_active: bool = False
) -> list[tuple[int, int]]:
    """Settle the jobs whose worker is gone: a cancel-requested one ends ``cancelled`` (its runner died
    before reading the flag; see ``repo.end_orphaned_cancels``), the others' shards are sent again
    (see ``repo.shards_to_redispatch``). Returns the shards sent."""
    with factory() as session:
        cancelled = repo.end_orphaned_cancels(session, stale_s=stale_s, all_active=all_active)
        pairs = repo.shards_to_redispatch(session, stale_s=stale_s, all_active=all_active)
        repo.mark_dispatched(session, pairs, release=all_active)
    for job_id in cancelled:
        log.warning("job %s ended cancelled: its cancel was requested and its worker is gone", job_id)
    for job_id, index in pairs:
        log.warning("re-dispatching job %s shard %s (worker gone)", job_id, index)
        dispatcher.dispatch(job_id, index)
    return pairs


class Reaper:
    """A daemon thread that, every third of ``stale_s``, ends cancel-requested jobs whose worker is gone
    and re-dispatches the other shards with stale heartbeats."""

    def __init__(self, dispatcher: Dispatcher, factory: sessionmaker[Session], stale_s: float) -> None:
        self.dispatcher, self.factory, self.stale_s = dispatcher, factory, stale_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="prunescope-reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(max(self.stale_s / 3, 0.5)):
            try:
                redispatch_orphans(self.dispatcher, self.factory, stale_s=self.stale_s)
            except Exception:  # noqa: BLE001 - a transient store error must not kill the reaper
                log.exception("re-dispatch pass failed")
