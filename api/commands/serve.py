"""``prunescope serve``: the API (+ dashboard); with no broker also the in-process executor."""

from __future__ import annotations

import argparse
import ipaddress
import os


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="run the API server (embedded executor unless --broker is given)",
        description="Serve REST v1 under /api/v1 (OpenAPI at /docs) and the dashboard at /. Without "
        "--broker, jobs run in this process on a SQLite store under ./prunescope-data.",
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (non-loopback needs PRUNESCOPE_TOKEN)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--broker", default=None, help="Celery broker URL, e.g. redis://127.0.0.1:6379/0")
    p.add_argument("--no-demo", action="store_true", help="skip the first-start digits-cnn demo")
    p.set_defaults(handler=run)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from api.seed import start_demo
    from api.settings import Settings

    if args.broker:
        os.environ["PRUNESCOPE_BROKER_URL"] = args.broker
    settings = Settings()
    if not _loopback(args.host) and not settings.token:
        raise ValueError(f"--host {args.host} is not a loopback address: set PRUNESCOPE_TOKEN so requests "
                         "need 'Authorization: Bearer <token>'")
    app = create_app(settings)
    if not args.no_demo:
        app.state.on_startup.append(lambda: start_demo(app.state.session_factory, app.state.dispatcher))
    mode = f"broker {settings.broker_url}" if settings.broker_url else "embedded executor"
    print(f"prunescope: http://{args.host}:{args.port}/docs  store {settings.db_url}  {mode}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
