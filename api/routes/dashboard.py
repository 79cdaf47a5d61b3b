"""What the browser needs beyond REST v1: the dashboard's files, plotly.js from the installed plotly
package, the API docs (Swagger UI at /docs, ReDoc at /redoc) from the assets that the
``fastapi-offline`` package ships, and the names of the built-in architectures.

Everything is found through the import system (``importlib``), never next to the source tree, so a
wheel or a Docker image serves the same files as a checkout, and nothing is fetched from a CDN.
Static files go out gzip-compressed (compressed once per file version, in a thread, then cached) with
``ETag``/``Last-Modified`` and ``Cache-Control``: the dashboard's own files (unversioned names)
with ``no-cache`` so a new release is picked up at once, vendored assets for a day.

Wiring (in ``create_app``): ``app.mount("/", DashboardFiles(...))`` for the dashboard, then
``dashboard.install(app)``, which puts these routes ahead of the ``/`` mount (it would answer first).
Nothing here imports plotly, fastapi_offline or torch.
"""

from __future__ import annotations

import gzip
import importlib.resources
import importlib.util
import math
import os
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import anyio
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import NotModifiedResponse, StaticFiles
from starlette.types import Receive, Scope, Send

from api.deps import SessionDep, SettingsDep
from pruning_core.names import catalogue

API_PREFIX = "/api/v1"
DOCS_ASSETS_URL = "/static/docs"
# The dashboard's file names carry no version: browsers revalidate them (a 304 when unchanged).
APP_CACHE_CONTROL = "no-cache"
# Vendored assets change only with the package that ships them.
VENDOR_CACHE_CONTROL = "public, max-age=86400"
COMPRESSIBLE_SUFFIXES = frozenset({".html", ".js", ".mjs", ".css", ".json", ".svg", ".map", ".txt"})
MIN_COMPRESS_BYTES = 1024  # below this gzip saves less than its own framing and a round of CPU
# The docs pages may load nothing from elsewhere: ReDoc, for one, puts an image from its CDN in its footer.
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data: blob:; worker-src 'self' blob:; connect-src 'self'; font-src 'self' data:")

router = APIRouter(tags=["dashboard"])  # served at the root: /static/...
api_router = APIRouter(tags=["dashboard"])  # included under /api/v1


def _package_dir(package: str, *parts: str) -> Path | None:
    """A directory inside an installed package, located without importing the package (None if absent)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location, *parts)
        if path.is_dir():
            return path
    return None


def frontend_dir() -> Path | None:
    """The dashboard's files: package data of the top-level ``frontend`` package (None if not installed)."""
    try:
        root = importlib.resources.files("frontend")
    except ModuleNotFoundError:
        return None
    path = Path(os.fspath(root)) if isinstance(root, os.PathLike) else None
    return path if path is not None and (path / "index.html").is_file() else None


@lru_cache(maxsize=1)
def plotly_js_path() -> Path | None:
    """``plotly/package_data/plotly.min.js`` of the installed plotly package (None if absent)."""
    folder = _package_dir("plotly", "package_data")
    path = folder / "plotly.min.js" if folder else None
    return path if path is not None and path.is_file() else None


@lru_cache(maxsize=1)
def docs_assets_dir() -> Path | None:
    """Swagger UI's and ReDoc's JS/CSS as shipped by ``fastapi-offline`` (None if it is not installed)."""
    folder = _package_dir("fastapi_offline", "static")
    return folder if folder is not None and (folder / "swagger-ui-bundle.js").is_file() else None


@lru_cache(maxsize=64)
def _gzipped(path: str, mtime_ns: int, size: int) -> bytes:
    """One file version's gzip bytes (keyed by mtime and size, so an edited file is compressed anew)."""
    return gzip.compress(Path(path).read_bytes(), compresslevel=6, mtime=0)


class GzippedFile(Response):
    """A file's cached gzip bytes; compressed on first use in a worker thread, off the event loop."""

    def __init__(self, path: Path, stat_result: os.stat_result, headers: Mapping[str, str], media_type: str) -> None:
        super().__init__(headers={**headers, "content-encoding": "gzip"}, media_type=media_type)
        self.path, self.stat_result = path, stat_result

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.body = await anyio.to_thread.run_sync(_gzipped, str(self.path), self.stat_result.st_mtime_ns,
                                                   self.stat_result.st_size)
        self.headers["content-length"] = str(len(self.body))
        await super().__call__(scope, receive, send)


def _not_modified(request: Headers, etag: str, last_modified: str) -> bool:
    """RFC 9110 conditional GET: If-None-Match wins over If-Modified-Since."""
    if_none_match = request.get("if-none-match")
    if if_none_match is not None:
        return any(tag.strip().removeprefix("W/") in (etag, "*") for tag in if_none_match.split(","))
    since = request.get("if-modified-since")
    if since:
        try:
            return parsedate_to_datetime(last_modified) <= parsedate_to_datetime(since)
        except (TypeError, ValueError):
            return False
    return False


def _takes_gzip(accept_encoding: str) -> bool:
    """``Accept-Encoding`` lists gzip without refusing it (``gzip;q=0``)."""
    for item in accept_encoding.lower().split(","):
        coding, _, params = item.partition(";")
        if coding.strip() == "gzip":
            q = params.replace(" ", "").removeprefix("q=")
            try:
                return not params.strip() or float(q) > 0
            except ValueError:
                return False
    return False


def static_response(path: Path, request: Headers, cache_control: str, stat_result: os.stat_result | None = None,
                    status_code: int = 200) -> Response:
    """``path`` with validators and ``Cache-Control``; gzip when the client takes it and it pays off."""
    stat_result = stat_result or path.stat()
    plain = FileResponse(path, status_code=status_code, stat_result=stat_result,
                         headers={"cache-control": cache_control, "vary": "Accept-Encoding"})
    compress = (_takes_gzip(request.get("accept-encoding", "")) and path.suffix in COMPRESSIBLE_SUFFIXES
                and stat_result.st_size >= MIN_COMPRESS_BYTES)
    # the gzip bytes are another representation: another strong validator
    etag = f'{plain.headers["etag"][:-1]}-gz"' if compress else plain.headers["etag"]
    headers = {k: v for k, v in plain.headers.items() if k in ("cache-control", "vary", "last-modified")}
    headers["etag"] = etag
    if status_code == 200 and _not_modified(request, etag, headers["last-modified"]):
        return NotModifiedResponse(Headers(headers))
    if not compress:
        return plain
    return GzippedFile(path, stat_result, headers, plain.media_type or "text/plain")


class DashboardFiles(StaticFiles):
    """StaticFiles that compress and set ``Cache-Control`` (still a StaticFiles: the token guard
    treats it as public code, see :func:`api.security.static_only`)."""

    def __init__(self, *, cache_control: str = APP_CACHE_CONTROL, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cache_control = cache_control

    def file_response(self, full_path: os.PathLike[str] | str, stat_result: os.stat_result, scope: Scope,
                      status_code: int = 200) -> Response:
        return static_response(Path(full_path), Headers(scope=scope), self.cache_control, stat_result, status_code)


@router.get("/static/plotly.min.js", include_in_schema=False)
def plotly_js(request: Request) -> Response:
    path = plotly_js_path()
    if path is None:
        raise HTTPException(404, "plotly.min.js: the plotly package is not installed (pip install plotly)")
    return static_response(path, request.headers, VENDOR_CACHE_CONTROL)


def _docs_assets() -> None:
    if docs_assets_dir() is None:
        raise HTTPException(404, "API docs: the Swagger UI/ReDoc assets are not installed "
                            "(pip install fastapi-offline, a base dependency of prunescope)")


def _favicon() -> str:
    return f"{DOCS_ASSETS_URL}/favicon.png"


def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI from local assets (FastAPI's default page loads them from a CDN)."""
    _docs_assets()
    app = request.app
    root = request.scope.get("root_path", "")
    page = get_swagger_ui_html(
        openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - Swagger UI",
        oauth2_redirect_url=f"{root}/docs/oauth2-redirect",
        swagger_js_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui.css", swagger_favicon_url=root + _favicon(),
        swagger_ui_parameters={"validatorUrl": None},  # the validator badge is an image from swagger.io
    )
    page.headers["content-security-policy"] = DOCS_CSP
    return page


def swagger_ui_redirect(_request: Request) -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


def redoc(request: Request) -> HTMLResponse:
    """ReDoc from local assets, without Google Fonts."""
    _docs_assets()
    app = request.app
    root = request.scope.get("root_path", "")
    page = get_redoc_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - ReDoc",
                          redoc_js_url=f"{root}{DOCS_ASSETS_URL}/redoc.standalone.js",
                          redoc_favicon_url=root + _favicon(), with_google_fonts=False)
    page.headers["content-security-policy"] = DOCS_CSP
    return page


@api_router.get("/architectures")
def architectures(session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    """The catalogue: every built-in architecture a job may name (prunescope's own, torchvision's,
    Distiller's aliases) with its input shape and class count, and the dataset names; plus ``published``,
    what live workers can build beyond it (plugin architectures, ``timm/<name>``, and the workers); torch-free."""
    from api.store.repo import published_models

    return {**catalogue(), "published": published_models(session, stale_s=settings.heartbeat_stale_s)}


@api_router.get("/shapes")
def parameter_shapes(session: SessionDep, model: str, model_kind: str | None = None) -> dict[str, Any]:
    """The parameter shapes of what a spec's ``model`` names (a registered model's, else the architecture's, as
    SQL holds them): the job page's per-layer summary weighs each layer by its size even where the points carry
    no ``nnz`` (an imported Distiller CSV). 404 when no shapes are known; torch-free."""
    from api.schemas import known_architecture
    from api.store.repo import architecture_facts, model_facts

    facts = model_facts(session, model) if model_kind != "architecture" else None
    if facts is None and (arch := known_architecture(model)) is not None:
        facts = architecture_facts(session, arch)
    if facts is None:
        raise HTTPException(404, f"model: no parameter shapes are known for {model!r}")
    sizes = {name: math.prod(dims) for name, dims in facts.shapes.items()}
    return {"model": model, "source": facts.source, "prunable": list(facts.prunable),
            "parameters": [{"name": n, "shape": list(d), "size": sizes[n]} for n, d in facts.shapes.items()]}


def install(app: FastAPI) -> None:
    """Include the dashboard and docs routes and the docs assets, ahead of any static mount at ``/``.

    Create the app with ``docs_url=None, redoc_url=None``: /docs and /redoc are served here.
    """
    before = len(app.router.routes)
    app.include_router(router)
    app.include_router(api_router, prefix=API_PREFIX)
    # Plain routes, as FastAPI adds its own docs pages: outside the schema and the API's dependencies.
    app.add_route("/docs", swagger_ui, include_in_schema=False)
    app.add_route("/docs/oauth2-redirect", swagger_ui_redirect, include_in_schema=False)
    app.add_route("/redoc", redoc, include_in_schema=False)
    assets = docs_assets_dir()
    if assets is not None:
        app.mount(DOCS_ASSETS_URL, DashboardFiles(directory=assets, cache_control=VENDOR_CACHE_CONTROL),
                  name="docs-assets")
    added = app.router.routes[before:]
    rest = app.router.routes[:before]
    mounts = [r for r in rest if isinstance(r, Mount) and r.path in ("", "/")]
    others = [r for r in rest if r not in mounts]
    app.router.routes[:] = [*others, *added, *mounts]
