"""``OPTIONS`` answered with the methods a path really has (RFC 9110 §9.3.7).

Without this, an ``OPTIONS`` on an API path falls through to the dashboard's static mount at ``/``
and answers ``405 Allow: GET, HEAD``, which is wrong for ``/api/v1/jobs`` (GET, POST). CORS
preflights never reach here: ``CORSMiddleware`` sits outside and answers them when CORS is on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Receive, Scope, Send

STATIC_METHODS = frozenset({"GET", "HEAD"})
PROBED = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(routes: Iterable[BaseRoute], scope: Scope) -> set[str]:
    """The methods routes answer at the scope's path, found the way the router dispatches: per method,
    the first route that matches fully. A static mount's GET/HEAD count only where no route claims the path."""
    routes = list(routes)
    methods: set[str] = set()
    static = False
    for method in PROBED:
        probe = {**scope, "method": method}
        for route in routes:
            match, _ = route.matches(probe)
            if match == Match.FULL:
                if isinstance(route, Mount):
                    static = True
                else:
                    methods.add(method)
                break
    if not methods and static:
        methods = set(STATIC_METHODS)
    return methods | {"OPTIONS"} if methods else set()


class OptionsAnswer:
    """Answers every plain ``OPTIONS`` request itself: 204 with ``Allow``, or 404 for a path nothing serves."""

    def __init__(self, app: ASGIApp, routes: Callable[[], Iterable[BaseRoute]]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "OPTIONS":
            await self.app(scope, receive, send)
            return
        methods = allowed_methods(self.routes(), scope)
        status = 204 if methods else 404
        headers = [(b"content-length", b"0")]
        if methods:
            headers.append((b"allow", ", ".join(sorted(methods)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
