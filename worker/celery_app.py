"""Celery on Redis: the distributed dispatcher's worker side, and the module-level ``app`` for Celery's CLI.

Settings follow the known traps: late acks + reject on worker loss so a killed worker's shard is
redelivered; prefetch 1 so one worker does not hoard shards; a visibility timeout well above a
shard's duration so Redis does not redeliver running tasks; solo/threads pools only (CUDA and fork
do not mix). The configuration and the task name live in :mod:`api.shared.dispatch`, which the API sends with.

Workers send task events (issue 18), so ``celery -A worker.celery_app flower`` (with
``PRUNESCOPE_BROKER_URL`` set, as for ``prunescope worker``) shows the workers and their shards; ``app``
below is built from the environment's settings when Celery's CLI imports this module. While a task runs,
every log record carries its job id and shard (:func:`api.logs.job_context`).
"""

from __future__ import annotations

import os
import socket
import threading
from functools import lru_cache
from typing import Any

from celery import Celery, signals

from api.logs import job_context
from api.shared.dispatch import TASK_NAME, make_celery  # noqa: F401 - the worker side binds them
from api.shared.settings import Settings, get_settings


@lru_cache(maxsize=1)
def _store(url: str) -> Any:
    from api.store import make_engine, make_session_factory, migrate

    engine = make_engine(url)
    migrate(engine)
    return make_session_factory(engine)


def preload(settings: Settings) -> None:
    """Pay before consuming what a worker's first shard would otherwise pay inside a sweep: the store (engine,
    migration) and the runners' imports (seconds of a core). Every worker pays it once: inside a sweep it is a
    fixed cost that more workers do not shrink (bench/scaleout.py's cold runs)."""
    from worker.runners import preload_modules

    _store(settings.db_url)
    preload_modules()


def register_tasks(app: Celery) -> None:
    """Bind the runner to the task name (worker side only)."""

    @app.task(name=TASK_NAME, bind=True)
    def run_shard_task(self: Any, job_id: int, shard: int) -> str:
        from worker.runners import run_shard

        settings = get_settings()
        worker = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
        return run_shard(job_id, shard, factory=_store(settings.db_url), settings=settings, worker=worker)


def worker_app(settings: Settings) -> Celery:
    """The Celery app a worker runs: the shared configuration, task events on, the runner's task bound."""
    app = make_celery(settings.broker_url or "redis://127.0.0.1:6379/0", settings.visibility_timeout_s,
                      settings.queue)
    app.conf.update(worker_send_task_events=True, task_send_sent_event=True)
    register_tasks(app)
    return app


# Celery's own log lines about a task (received, succeeded) carry its job and shard too.
_contexts: dict[str, Any] = {}


@signals.task_prerun.connect
def _enter_job(task_id: str = "", task: Any = None, args: Any = (), **_: Any) -> None:
    if getattr(task, "name", None) == TASK_NAME and len(args or ()) == 2:
        context = job_context(job_id=args[0], shard=args[1])
        context.__enter__()
        _contexts[task_id] = context


@signals.task_postrun.connect
def _leave_job(task_id: str = "", **_: Any) -> None:
    context = _contexts.pop(task_id, None)
    if context is not None:
        context.__exit__(None, None, None)


#: For Celery's CLI (``celery -A worker.celery_app flower`` / ``worker``): the app on the environment's settings.
app = worker_app(get_settings())
