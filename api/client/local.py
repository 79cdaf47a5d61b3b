"""Local mode: the real API app served inside this process, without sockets.

``Client.local()`` talks to the same FastAPI app, SQLite store and in-process executor as
``prunescope serve``, through an httpx transport that calls the ASGI app directly. Every client
call therefore runs the very code the server runs (validation, runner, storage), which is what
makes a local sweep and a served one give identical results, with no second implementation.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import httpx


class InProcessTransport(httpx.BaseTransport):
    """A sync httpx transport over an ASGI app; an event loop in a daemon thread runs the app and its lifespan.

    The thread is a daemon so that a notebook or script that never calls ``close()`` still exits.
    Responses are read whole before they are returned, so a server-sent event stream arrives when
    its job has ended (``wait()`` polls instead, and shows progress all the same).
    """

    def __init__(self, app: Any) -> None:
        self.data_dir: Path = app.state.settings.data_dir
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="prunescope-local", daemon=True)
        self._thread.start()
        self._asgi = httpx.ASGITransport(app=app)
        self._stop = asyncio.Event()
        started: Future[None] = Future()
        self._lifespan = asyncio.run_coroutine_threadsafe(self._run_lifespan(app, started), self._loop)
        try:
            started.result()  # startup done (store migrated, executor ready), or its exception raised here
        except BaseException:  # e.g. DataDirLocked: a server already runs over this data dir
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()
            raise
        atexit.register(self.close)  # leave the lifespan cleanly even if the caller never closes

    async def _run_lifespan(self, app: Any, started: Future[None]) -> None:
        """Enter the app's lifespan, hold it until ``close()``, then leave it (executor shutdown) in one task."""
        try:
            async with app.router.lifespan_context(app):
                started.set_result(None)
                await self._stop.wait()
        except BaseException as exc:
            if not started.done():
                started.set_exception(exc)
            raise

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def call() -> tuple[int, list[tuple[bytes, bytes]], bytes]:
            response = await self._asgi.handle_async_request(request)
            # the raw bytes: the outer Response decodes them once, as its Content-Encoding says
            body = b"".join([chunk async for chunk in response.aiter_raw()])
            await response.aclose()
            return response.status_code, response.headers.raw, body

        status, headers, body = asyncio.run_coroutine_threadsafe(call(), self._loop).result()
        return httpx.Response(status, headers=headers, content=body, request=request)

    def close(self) -> None:
        atexit.unregister(self.close)
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._stop.set)
        self._lifespan.result(timeout=60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


def local_transport(data_dir: str | Path | None) -> InProcessTransport:
    """The embedded service (SQLite under ``data_dir``, in-process executor) behind a transport.

    A broker or database URL from the environment is ignored: local means this process and this folder.
    """
    from api.app import create_app
    from api.shared.settings import Settings

    options: dict[str, Any] = {"database_url": "", "broker_url": "", "token": ""}
    if data_dir is not None:
        options["data_dir"] = Path(data_dir)
    from worker.executor import Executor

    return InProcessTransport(create_app(Settings(**options), dispatcher=Executor))
