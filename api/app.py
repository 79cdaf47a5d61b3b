"""The FastAPI application: REST v1 under /api/v1, OpenAPI at /docs, the dashboard at /.

``create_app`` migrates the store and takes the dispatcher its caller chose (Celery when a broker URL is
set; ``prunescope serve`` and ``Client.local()`` pass the embedded executor otherwise). Nothing here
imports torch or the worker: the runner imports torch lazily, in the executor's threads or in the
Celery worker. The request guards (token, body limit, CORS) live in
:mod:`api.security`; the OpenAPI document is patched here to describe the errors actually sent.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session, sessionmaker

from api.deps import single_valued_query
from api.limits import ApplyLimits
from api.options import OptionsAnswer
from api.routes import (
    artifacts,
    dashboard,
    datasets,
    events,
    experiments,
    exports,
    health,
    imports,
    jobs,
    metrics,
    models,
    planning,
    points,
)
from api.security import BodyLimit, TokenAuth, static_only
from api.shared.dispatch import CeleryDispatcher, Dispatcher, Reaper, redispatch_orphans
from api.shared.settings import Settings, get_settings
from api.store import make_engine, make_session_factory, migrate
from api.store.datadir_lock import DataDirLock
from api.store.models import JOB_KINDS
from pruning_core.limits import MAX_ERRORS, MAX_MESSAGE_CHARS, QUOTE_CHARS, LimitError, clip

log = logging.getLogger(__name__)
FRONTEND_DIR = dashboard.frontend_dir()  # package data of `frontend`, so a wheel serves it too
API_PREFIX = "/api/v1"


def _field(loc: tuple[Any, ...]) -> str:
    """('body', 'sensitivity', 'spec', 'levels') -> 'spec.levels'; ('query', 'limit') -> 'limit (query)'."""
    parts = [str(p) for p in loc]
    source = parts.pop(0) if parts and parts[0] in ("body", "query", "path", "header", "form") else "body"
    if source == "body" and parts and parts[0] in JOB_KINDS:
        parts.pop(0)  # the discriminated union's tag
    name = ".".join(parts) or source
    return name if source == "body" else f"{name} ({source})"


def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each field; a check that knows the exact option (a ``LimitError``) extends the path.
    Never echoes input at length: names, messages and the number of errors are capped, so a 190 MB
    bad body gets a short answer."""
    found = exc.errors()
    errors = []
    for e in found[:MAX_ERRORS]:
        loc = tuple(e.get("loc", ()))
        cause = (e.get("ctx") or {}).get("error")
        if isinstance(cause, LimitError) and cause.field:
            loc += tuple(cause.field.split("."))
        message = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        errors.append({"field": clip(_field(tuple(clip(str(p)) for p in loc)), 2 * QUOTE_CHARS),
                       "message": clip(message, MAX_MESSAGE_CHARS)})
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    if len(found) > MAX_ERRORS:
        detail += f"; and {len(found) - MAX_ERRORS} more errors"
    return JSONResponse({"detail": detail, "errors": errors}, status_code=422)


def _http_error(_request: Request, exc: HTTPException) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def _unstorable(request: Request, exc: Exception) -> JSONResponse:
    """A value the database cannot hold (an id past 64 bits, a NUL in PostgreSQL text) is the
    client's error: 422, not 500. Logged, in case a bug of ours ever lands here."""
    first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    log.warning("unstorable value in %s %s: %s", request.method, request.url.path, first)
    return JSONResponse({"detail": f"a value is out of range or cannot be stored: {first}"}, status_code=422)


_ERROR_SCHEMA = {"type": "object", "required": ["detail"], "properties": {"detail": {"type": "string"}}}
_VALIDATION_SCHEMA = {
    "type": "object", "required": ["detail"],  # "errors" only on request-validation failures
    "properties": {"detail": {"type": "string"}, "errors": {"type": "array", "items": {
        "type": "object", "required": ["field", "message"],
        "properties": {"field": {"type": "string"}, "message": {"type": "string"}}}}},
}


def _patch_openapi(app: FastAPI) -> None:
    """Describe the errors this app really sends (``{"detail": str}``, 422 with ``errors``) and the
    bearer scheme, so clients and schemathesis check responses against the truth."""
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = FastAPI.openapi(app)
        components = schema.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        schemas.pop("ValidationError", None)
        schemas["HTTPValidationError"] = _VALIDATION_SCHEMA
        schemas["Error"] = _ERROR_SCHEMA
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer",
                                                    "description": "PRUNESCOPE_TOKEN, when the server sets one"}}
        error = {"description": "client error", "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Error"}}}}
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                operation.setdefault("responses", {}).setdefault("4XX", error)
                if app.state.settings.token and path not in ("/healthz", f"{API_PREFIX}/healthz"):
                    operation["security"] = [{"bearer": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


#: What builds a dispatcher once the store exists: ``worker.executor.Executor`` (the embedded executor) is one.
DispatcherFactory = Callable[[sessionmaker[Session], Settings], Dispatcher]


def build_dispatcher(settings: Settings, factory: sessionmaker[Session],
                     dispatcher: Dispatcher | DispatcherFactory | None) -> Dispatcher:
    """The dispatcher the caller chose: given, built by the given factory, or Celery when a broker is set.

    The API never imports the worker: whoever starts an app without a broker (``prunescope serve``,
    ``Client.local()``) passes the embedded executor, so the choice is made where torch is known to be there."""
    if dispatcher is None:
        if not settings.broker_url:
            raise ValueError("no executor: set PRUNESCOPE_BROKER_URL (jobs go to `prunescope worker` processes) or "
                             "pass dispatcher=worker.executor.Executor (jobs run in this process)")
        return CeleryDispatcher(settings.broker_url, settings.visibility_timeout_s, settings.queue)
    if isinstance(dispatcher, type) or not hasattr(dispatcher, "dispatch"):
        return dispatcher(factory, settings)
    return dispatcher


def create_app(settings: Settings | None = None,
               dispatcher: Dispatcher | DispatcherFactory | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.db_url)
    migrate(engine)
    factory = make_session_factory(engine)
    dispatcher = build_dispatcher(settings, factory, dispatcher)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Shards left unfinished by a previous process: in embedded mode the data-dir lock proves nobody
        # else can be running them, so every active one is resumed (or, if its cancel was requested,
        # ended cancelled); with a broker only those whose heartbeat is stale.
        embedded = dispatcher.name == "embedded"
        # ``prunescope serve`` takes the lock before building anything, to refuse at once; TestClient
        # and Client.local() apps take it here, for as long as their lifespan runs.
        own_lock = embedded and app.state.data_dir_lock is None
        if own_lock:
            app.state.data_dir_lock = DataDirLock(settings.data_dir).acquire()
        try:
            redispatch_orphans(dispatcher, factory, stale_s=settings.heartbeat_stale_s, all_active=embedded)
            reaper = None
            if not embedded:
                reaper = Reaper(dispatcher, factory, settings.heartbeat_stale_s)
                reaper.start()
            for hook in app.state.on_startup:
                hook()
            yield
            if reaper is not None:
                reaper.stop()
            shutdown = getattr(dispatcher, "shutdown", None)
            if shutdown is not None:
                shutdown()
            engine.dispose()
            health = getattr(app.state, "health_engine", None)
            if health is not None:  # the probes' own connection
                health.dispose()
            count = getattr(app.state, "change_count", None)
            if count is not None:  # the jobs list's reader of the change count
                await count.close()
        finally:
            if own_lock:
                app.state.data_dir_lock.release()
                app.state.data_dir_lock = None

    app = FastAPI(title="prunescope", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=f"{API_PREFIX}/openapi.json")  # /docs, /redoc: dashboard.install, local assets
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = factory
    app.state.dispatcher = dispatcher
    app.state.on_startup = []
    app.state.data_dir_lock = None  # a DataDirLock the caller already holds (``prunescope serve``)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(OverflowError, _unstorable)
    app.add_exception_handler(DataError, _unstorable)
    app.include_router(health.router)  # /healthz at the root too, for probes: first, so probes match at once
    for module in (health, events, imports, jobs, points, models, datasets, experiments, artifacts, planning,
                   exports):
        app.include_router(module.router, prefix=API_PREFIX, dependencies=[Depends(single_valued_query)])
    metrics.install(app)  # /metrics (Prometheus) and the request-latency middleware (issue 18)
    if FRONTEND_DIR is not None:
        app.mount("/", dashboard.DashboardFiles(directory=FRONTEND_DIR, html=True), name="frontend")
    dashboard.install(app)
    _patch_openapi(app)
    # Added innermost first: CORS answers preflights before the token check, which runs before
    # any body is read.
    current = lambda: app.state.settings  # noqa: E731 - read per request, tests change settings live
    app.add_middleware(OptionsAnswer, routes=lambda: app.router.routes)
    app.add_middleware(BodyLimit, settings=current)
    app.add_middleware(ApplyLimits, settings=current)  # issue 13: specs validated with these settings' limits
    app.add_middleware(TokenAuth, settings=current, is_static=static_only(app.router.routes))
    if settings.cors_allow_list:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_allow_list, allow_credentials=False,
                           allow_methods=["GET", "POST", "DELETE"], allow_headers=["Authorization", "Content-Type"])
    return app
