"""Request guards that wrap the whole ASGI app: the bearer token, the body-size limit, CORS.

They are middleware rather than route dependencies so they are deny-by-default: a route added
later (by any router, a mount, ``dashboard.install``) is covered without anyone remembering to.

Token policy (with ``PRUNESCOPE_TOKEN`` set):

- public: ``/healthz`` (and ``/api/v1/healthz``), the OpenAPI document and ``/docs`` (the API's
  shape, no data), and the dashboard's static files outside ``/api/`` (code, no data);
- everything else needs ``Authorization: Bearer <token>``. Browsers cannot add headers to
  ``EventSource`` streams or ``<a href>`` downloads, so those GETs (paths ending ``/events``,
  ``/download``, ``.csv``) also accept ``?access_token=<token>`` (RFC 6750 §2.3).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from urllib.parse import parse_qs

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.shared.settings import Settings

API_PREFIX = "/api/v1"
PUBLIC_PATHS = frozenset({"/healthz", f"{API_PREFIX}/healthz", f"{API_PREFIX}/openapi.json", "/docs",
                          "/docs/oauth2-redirect", "/redoc"})
QUERY_TOKEN_SUFFIXES = ("/events", "/download", ".csv")
# Multipart framing and form fields on top of the largest allowed file.
BODY_SLACK_BYTES = 1 << 20


async def _send_json(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def token_matches(scope: Scope, token: str) -> bool:
    """The request carries the token: as a bearer header, or as ``access_token`` on a browser GET."""
    scheme, _, value = Headers(scope=scope).get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode()):
        return True
    if scope["method"] == "GET" and scope["path"].endswith(QUERY_TOKEN_SUFFIXES):
        given = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("access_token", [""])[-1]
        return hmac.compare_digest(given.encode(), token.encode())
    return False


class TokenAuth:
    """401 for any non-public request without the token (see the module docstring for the policy)."""

    def __init__(self, app: ASGIApp, settings: Callable[[], Settings], is_static: Callable[[Scope], bool]) -> None:
        self.app = app
        self.settings = settings
        self.is_static = is_static

    def public(self, scope: Scope) -> bool:
        path = scope["path"]
        if scope["method"] == "OPTIONS":
            return True  # CORS preflights carry no credentials; CORS itself decides on them
        if path in PUBLIC_PATHS or path.startswith("/static/"):  # /static/: vendored JS (plotly), no data
            return True
        return not path.startswith("/api/") and self.is_static(scope)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = self.settings().token
        if scope["type"] != "http" or not token or self.public(scope) or token_matches(scope, token):
            await self.app(scope, receive, send)
            return
        await _send_json(send, 401, "Authorization: a valid 'Bearer <PRUNESCOPE_TOKEN>' header is required",
                         {"WWW-Authenticate": "Bearer"})


def static_only(routes: list) -> Callable[[Scope], bool]:  # noqa: ANN001 - starlette's BaseRoute list
    """True when the path would be served by a static mount (frontend files) or by no route at all,
    never when a route answers it: routes are where data lives."""
    def check(scope: Scope) -> bool:
        for route in routes:
            match, _ = route.matches(scope)
            if match != Match.NONE:
                return isinstance(route, Mount) and _is_static_mount(route)
        return True

    return check


def _is_static_mount(route: Mount) -> bool:
    from starlette.staticfiles import StaticFiles

    return isinstance(route.app, StaticFiles)


class TooLarge(HTTPException):
    """Raised from ``receive`` when the body passes the limit. An HTTPException, so FastAPI's body
    parsing re-raises it as is (anything else becomes a vague 400) and the handler answers 413."""

    def __init__(self, detail: str) -> None:
        super().__init__(413, detail, headers={"Connection": "close"})


class BodyLimit:
    """Refuse request bodies over their limit while they stream in (multipart uploads:
    ``max_upload_mb`` + slack; anything else, which is parsed in memory: ``max_json_mb``): a declared
    Content-Length over the limit is refused before reading; otherwise bytes are counted per chunk,
    so an oversized upload never reaches the disk or memory in full."""

    def __init__(self, app: ASGIApp, settings: Callable[[], Settings]) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings = self.settings()
        headers = Headers(scope=scope)
        if headers.get("content-type", "").lower().startswith("multipart/"):
            limit = settings.max_upload_bytes + BODY_SLACK_BYTES
            detail = (f"request body larger than the {settings.max_upload_mb:g} MB upload limit "
                      "(PRUNESCOPE_MAX_UPLOAD_MB)")
        else:
            limit = settings.max_json_bytes
            detail = (f"request body larger than the {settings.max_json_mb:g} MB limit for JSON bodies "
                      "(PRUNESCOPE_MAX_JSON_MB); files go up as multipart uploads")
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await _send_json(send, 413, detail, {"Connection": "close"})
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise TooLarge(detail)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except TooLarge:
            if started:
                raise
            await _send_json(send, 413, detail, {"Connection": "close"})

