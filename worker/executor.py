"""The embedded dispatcher: the API process hands shards to the same runner as Celery.

A sensitivity shard runs in a child process of its own (spawned: the API process never imports torch), as
many at once as the process is given cores, so an embedded sweep uses every core: its shards measure side by
side, each with ``cores // shards`` torch threads (at least one) unless ``PRUNESCOPE_TORCH_THREADS`` says.
A child writes its log lines to the server's stderr in the server's format (not to the server's handlers).
Other kinds (train, prune, plan: one shard each) run in a background thread, one at a time, as before; so do
sensitivity shards with ``PRUNESCOPE_SHARD_PROCESSES=0``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from api.shared.settings import Settings
from pruning_core.cores import usable_cores

log = logging.getLogger(__name__)


def _exit_with(parent: int) -> None:
    """End this process once its parent is gone (even SIGKILLed): an orphan would go on running a shard that
    the next embedded server resumes."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(70)


def _shard_process(job_id: int, shard: int, settings: Settings, worker: str, log_level: int | None,
                   parent: int) -> None:
    """A child process's whole life: its own store connections, the runner, and the server's log format
    (when the server configured one), for as long as the server lives."""
    from api.logs import configure_logging
    from api.store import make_engine, make_session_factory
    from worker.runners import run_shard

    threading.Thread(target=_exit_with, args=(parent,), name="parent-watch", daemon=True).start()
    if log_level is not None:
        configure_logging(settings.log_format, log_level)
    engine = make_engine(settings.db_url)
    try:
        run_shard(job_id, shard, factory=make_session_factory(engine), settings=settings, worker=worker)
    finally:
        engine.dispose()


class Executor:
    """Runs sensitivity shards in child processes (one per core at most) and other shards in a thread."""

    name = "embedded"

    def __init__(self, factory: sessionmaker[Session], settings: Settings, workers: int = 1,
                 processes: int | None = None) -> None:
        self.factory, self.settings = factory, settings
        self.worker_name = f"embedded@{socket.gethostname()}:{os.getpid()}"
        self.cores = usable_cores()
        chosen = processes if processes is not None else settings.shard_processes
        self.processes = self.cores if chosen is None else chosen
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prunescope-exec")
        # one thread per child process, which waits for it
        self._children = ThreadPoolExecutor(max_workers=max(1, self.processes), thread_name_prefix="prunescope-shard")
        self._context = multiprocessing.get_context("spawn")  # the API's threads and sockets stay here
        self._live: set[Any] = set()
        self._lock = threading.Lock()
        self._closed = False
        # What this server can build (shape facts for torch-free previews and plans; plugin and timm
        # architectures for job validation), learnt from a child process (this one is the API's and must not
        # import torch) in the background, and refreshed from here like any worker's.
        from worker.facts import publish_embedded

        self.publisher = publish_embedded(factory, settings.db_url, self.worker_name, settings.heartbeat_stale_s)

    def dispatch(self, job_id: int, shard: int) -> Future:
        shards = self._sensitivity_shards(job_id) if self.processes else None
        if shards is None:
            return self._pool.submit(self._run, job_id, shard)
        return self._children.submit(self._run_child, job_id, shard, shards)

    def _sensitivity_shards(self, job_id: int) -> int | None:
        """The shard count of a sensitivity job; None for another kind (or a job that is gone)."""
        from api.store.models import Job

        with self.factory() as s:
            job = s.get(Job, job_id)
            return job.shards_total if job is not None and job.kind == "sensitivity" else None

    def _run(self, job_id: int, shard: int) -> None:
        from worker.runners import run_shard

        try:
            run_shard(job_id, shard, factory=self.factory, settings=self.settings, worker=self.worker_name)
        except Exception:  # noqa: BLE001 - the runner records failures in SQL; never kill the pool
            log.exception("job %s shard %s crashed", job_id, shard)

    def child_threads(self, shards: int) -> int:
        """Torch threads of one sensitivity shard's process: the setting, else the cores shared among the
        job's shards that run at once."""
        if self.settings.torch_threads > 0:
            return self.settings.torch_threads
        return max(1, self.cores // max(1, min(shards, self.processes)))

    def _run_child(self, job_id: int, shard: int, shards: int) -> None:
        """Run the shard in a spawned child and wait for it. A child that dies leaves its shard running in
        SQL: the next start of the embedded service resumes it, as after a crash."""
        from api.logs import ContextFilter

        root = logging.getLogger()
        ours = any(isinstance(f, ContextFilter) for h in root.handlers for f in h.filters)
        settings = self.settings.model_copy(update={"torch_threads": self.child_threads(shards)})
        with self._lock:
            if self._closed:
                return
            child = self._context.Process(target=_shard_process, name=f"prunescope-job{job_id}-shard{shard}",
                                          args=(job_id, shard, settings, self.worker_name,
                                                root.level if ours else None, os.getpid()))
            child.start()
            self._live.add(child)
        try:
            child.join()
        finally:
            with self._lock:
                self._live.discard(child)
        if child.exitcode != 0 and not self._closed:
            log.error("job %s shard %s: its process exited with code %s", job_id, shard, child.exitcode)

    def healthy(self) -> tuple[bool, str]:
        return True, (f"embedded executor (sensitivity shards in up to {self.processes} child processes, "
                      "other jobs in a thread)")

    def shutdown(self, wait: bool = False) -> None:
        """Stop taking shards; the running shard processes are ended (their shards resume at the next start)."""
        with self._lock:
            self._closed = True
            for child in self._live:
                child.terminate()
        self._pool.shutdown(wait=wait, cancel_futures=True)
        self._children.shutdown(wait=wait, cancel_futures=True)
        self.publisher.stop()
