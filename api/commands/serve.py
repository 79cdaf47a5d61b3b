"""``prunescope serve``: the API (+ dashboard); with no broker also the in-process executor."""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import logging
import os
import sys

NO_EXECUTOR = ("no executor: without --broker jobs run in this process, which needs torch, and torch is not "
               "installed here. Either install the worker side here (pip install 'prunescope[torch]'), or serve "
               "with --broker redis://HOST:6379/0 and run `prunescope worker` where prunescope[torch] is installed")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="run the API server (embedded executor unless --broker is given)",
        description="Serve REST v1 under /api/v1 (OpenAPI at /docs) and the dashboard at /. Without "
        "--broker, jobs run in this process on a SQLite store under ./prunescope-data.",
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (non-loopback needs PRUNESCOPE_TOKEN)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--broker", default=None, help="Celery broker URL, e.g. redis://127.0.0.1:6379/0")
    p.add_argument("--workers", type=int, default=1,
                   help="server processes (needs --broker: the embedded executor lives in its one process)")
    p.add_argument("--no-demo", action="store_true", help="skip the first-start digits-cnn demo")
    p.set_defaults(handler=run)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def torch_installed() -> bool:
    """Whether torch can be imported here, found without importing it (that takes seconds)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # a finder that refuses it, or a None left in sys.modules
        return False


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from api.seed import start_demo
    from api.shared.settings import Settings

    if args.broker:
        os.environ["PRUNESCOPE_BROKER_URL"] = args.broker
    settings = Settings()
    from api.logs import configure_logging, uvicorn_log_config

    configure_logging(settings.log_format, settings.log_level)  # issue 18: one format for serve and worker
    if not _loopback(args.host) and not settings.token:
        raise ValueError(f"--host {args.host} is not a loopback address: set PRUNESCOPE_TOKEN so requests "
                         "need 'Authorization: Bearer <token>'")
    if args.workers < 1 or (args.workers > 1 and not settings.broker_url):
        raise ValueError("--workers above 1 needs --broker (the embedded executor runs in one process)")
    if not settings.broker_url and not torch_installed():
        raise ValueError(NO_EXECUTOR)
    lock = None
    if not settings.broker_url:
        # One embedded server per data dir: a second would resume this one's running shards.
        from api.store.datadir_lock import DataDirLock, DataDirLocked

        try:
            lock = DataDirLock(settings.data_dir).acquire()
        except DataDirLocked as exc:
            print(f"prunescope serve: error: {exc}", file=sys.stderr, flush=True)
            return 1
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    base = f"http://{shown}:{args.port}"
    mode = f"broker {settings.broker_url}" if settings.broker_url else "embedded executor"
    banner = (f"prunescope: dashboard {base}/  API {base}/api/v1  docs {base}/docs\n"
              f"prunescope: store {settings.db_url}, {mode}")
    if settings.log_format == "json":  # every line of the output is then a JSON record
        logging.getLogger("prunescope").info(banner.replace("\n", "; "))
    else:
        print(banner, flush=True)
    if args.workers > 1:
        # Each worker process builds its own app from the environment; the demo runs once, here.
        from api.shared.dispatch import CeleryDispatcher
        from api.store import make_engine, make_session_factory, migrate

        engine = make_engine(settings.db_url)
        migrate(engine)
        if not args.no_demo:
            start_demo(make_session_factory(engine), CeleryDispatcher(
                settings.broker_url, settings.visibility_timeout_s, settings.queue), base)
        uvicorn.run("api.app:create_app", factory=True, host=args.host, port=args.port, workers=args.workers,
                    log_level="warning", log_config=uvicorn_log_config())
        return 0
    executor = None  # with a broker, Celery; without, this command chooses the embedded executor (the app never
    if not settings.broker_url:  # imports the worker)
        from worker.executor import Executor as executor  # noqa: N813 - a dispatcher factory
    app = create_app(settings, dispatcher=executor)
    app.state.data_dir_lock = lock  # held until this process exits (the kernel frees it even on SIGKILL)
    if not args.no_demo:
        app.state.on_startup.append(lambda: start_demo(app.state.session_factory, app.state.dispatcher, base))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", log_config=uvicorn_log_config())
    return 0
