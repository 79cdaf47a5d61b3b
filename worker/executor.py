"""The embedded dispatcher: a thread pool in the API process calling the same runner as Celery."""

from __future__ import annotations

import logging
import os
import socket
from concurrent.futures import Future, ThreadPoolExecutor

from sqlalchemy.orm import Session, sessionmaker

from api.shared.settings import Settings

log = logging.getLogger(__name__)


class Executor:
    """Runs shards in background threads; torch is imported lazily by the runner on first use."""

    name = "embedded"

    def __init__(self, factory: sessionmaker[Session], settings: Settings, workers: int = 1) -> None:
        self.factory, self.settings = factory, settings
        self.worker_name = f"embedded@{socket.gethostname()}:{os.getpid()}"
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prunescope-exec")
        # What this server can build (shape facts for torch-free previews and plans; plugin and timm
        # architectures for job validation), learnt from a child process (this one is the API's and must not
        # import torch) in the background, and refreshed from here like any worker's.
        from worker.facts import publish_embedded

        self.publisher = publish_embedded(factory, settings.db_url, self.worker_name, settings.heartbeat_stale_s)

    def dispatch(self, job_id: int, shard: int) -> Future:
        return self._pool.submit(self._run, job_id, shard)

    def _run(self, job_id: int, shard: int) -> None:
        from worker.runners import run_shard

        try:
            run_shard(job_id, shard, factory=self.factory, settings=self.settings, worker=self.worker_name)
        except Exception:  # noqa: BLE001 - the runner records failures in SQL; never kill the pool
            log.exception("job %s shard %s crashed", job_id, shard)

    def healthy(self) -> tuple[bool, str]:
        return True, "embedded executor (in-process thread pool)"

    def shutdown(self, wait: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)
        self.publisher.stop()
