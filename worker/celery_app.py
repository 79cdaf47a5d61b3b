"""Celery on Redis: the distributed dispatcher's worker side.

Settings follow the known traps: late acks + reject on worker loss so a killed worker's shard is
redelivered; prefetch 1 so one worker does not hoard shards; a visibility timeout well above a
shard's duration so Redis does not redeliver running tasks; solo/threads pools only (CUDA and fork
do not mix). The API imports this module only to ``send_task`` by name.
"""

from __future__ import annotations

import os
import socket
import threading
from functools import lru_cache
from typing import Any

from celery import Celery

TASK_NAME = "prunescope.run_shard"


def make_celery(broker_url: str, visibility_timeout_s: int, queue: str = "prunescope") -> Celery:
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


@lru_cache(maxsize=1)
def _store(url: str) -> Any:
    from api.store import make_engine, make_session_factory, migrate

    engine = make_engine(url)
    migrate(engine)
    return make_session_factory(engine)


def register_tasks(app: Celery) -> None:
    """Bind the runner to the task name (worker side only)."""

    @app.task(name=TASK_NAME, bind=True)
    def run_shard_task(self: Any, job_id: int, shard: int) -> str:
        from api.settings import get_settings
        from worker.runners import run_shard

        settings = get_settings()
        worker = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
        return run_shard(job_id, shard, factory=_store(settings.db_url), settings=settings, worker=worker)
