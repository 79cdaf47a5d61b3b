"""Celery on Redis: the distributed dispatcher's worker side.

Settings follow the known traps: late acks + reject on worker loss so a killed worker's shard is
redelivered; prefetch 1 so one worker does not hoard shards; a visibility timeout well above a
shard's duration so Redis does not redeliver running tasks; solo/threads pools only (CUDA and fork
do not mix). The configuration and the task name live in :mod:`api.shared.dispatch`, which the API sends with.
"""

from __future__ import annotations

import os
import socket
import threading
from functools import lru_cache
from typing import Any

from celery import Celery

from api.shared.dispatch import TASK_NAME, make_celery  # noqa: F401 - the worker side binds them


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
        from api.shared.settings import get_settings
        from worker.runners import run_shard

        settings = get_settings()
        worker = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
        return run_shard(job_id, shard, factory=_store(settings.db_url), settings=settings, worker=worker)
