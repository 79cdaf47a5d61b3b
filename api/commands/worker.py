"""``prunescope worker``: a Celery worker running job shards (CUDA when present)."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from api.shared.dispatch import Dispatcher
    from api.shared.settings import Settings
    from worker.facts import CapabilityPublisher


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="run a Celery worker for a `serve --broker` server",
                       description="Consume job shards from the broker (PRUNESCOPE_BROKER_URL or --broker).")
    p.add_argument("--concurrency", type=int, default=1, help="shards at once (threads pool when > 1)")
    p.add_argument("--broker", default=None, help="Celery broker URL (default PRUNESCOPE_BROKER_URL)")
    p.add_argument("--loglevel", default="INFO")
    p.set_defaults(handler=run)


def redispatch_at_startup(settings: Settings, dispatcher: Dispatcher | None = None) -> list[tuple[int, int]]:
    """Migrate the store, then send again the shards whose worker died while nobody was watching
    (stale heartbeat, or queued long ago with the message lost); idempotent upserts make it safe."""
    from api.shared.dispatch import CeleryDispatcher, redispatch_orphans
    from api.store import make_engine, make_session_factory, migrate

    engine = make_engine(settings.db_url)
    try:
        migrate(engine)
        dispatcher = dispatcher or CeleryDispatcher(settings.broker_url, settings.visibility_timeout_s, settings.queue)
        return redispatch_orphans(dispatcher, make_session_factory(engine), stale_s=settings.heartbeat_stale_s)
    finally:
        engine.dispose()


def _publish_facts(settings: Settings) -> CapabilityPublisher:
    """Publish what this worker can build (devices, plugin and timm architectures, refreshed every
    heartbeat_stale_s / 3) and the parameter shapes of the built-in and plugin architectures (this process
    has torch) from a background thread, so the torch-free API validates, previews and plans on them; the
    worker starts at once."""
    from api.store import make_engine, make_session_factory
    from worker.facts import publish_worker, publisher_name

    factory = make_session_factory(make_engine(settings.db_url))
    return publish_worker(factory, publisher_name(), settings.heartbeat_stale_s)


def run(args: argparse.Namespace) -> int:
    if args.concurrency < 1:
        raise ValueError("--concurrency must be at least 1")
    if args.broker:
        os.environ["PRUNESCOPE_BROKER_URL"] = args.broker
    from api.logs import configure_logging
    from api.shared.settings import get_settings

    settings = get_settings()
    if not settings.broker_url:
        raise ValueError("no broker: pass --broker redis://host:6379/0 or set PRUNESCOPE_BROKER_URL")
    configure_logging(settings.log_format, args.loglevel)  # issue 18: the same records as `serve`
    from worker.celery_app import preload, worker_app

    redispatch_at_startup(settings)
    publisher = _publish_facts(settings)  # from its own thread, at once: the API learns what this worker builds
    preload(settings)  # the first shard then starts as fast as the next ones
    app = worker_app(settings)  # task events on, so Flower shows the workers and their tasks
    # solo/threads only: the parent must never fork after touching CUDA.
    pool = "solo" if args.concurrency == 1 else "threads"
    try:
        app.worker_main([
            "worker", f"--pool={pool}", f"--concurrency={args.concurrency}", f"--loglevel={args.loglevel}",
            "-Q", settings.queue, "-n", f"prunescope-{os.getpid()}@%h", "--without-gossip", "--without-mingle",
        ])
    finally:  # a worker that stops says so: the API refuses its plugins' jobs at once, not after the stale bound
        publisher.stop()
    return 0
