"""The request limits a spec is validated against, taken from the app's settings for each request.

FastAPI validates a request body before any route code runs and passes pydantic no context, so the
schemas read the limits from a context variable that :class:`ApplyLimits` sets around each request.
Outside a request (the client, the CLI, tests building specs) the library defaults apply.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from api.settings import Settings
from pruning_core.limits import DEFAULT_LIMITS, Limits

_CURRENT: ContextVar[Limits] = ContextVar("prunescope_request_limits", default=DEFAULT_LIMITS)


def current_limits() -> Limits:
    """The limits of the request being validated (the defaults outside one)."""
    return _CURRENT.get()


@contextmanager
def limits_applied(limits: Limits) -> Iterator[None]:
    """Validate with ``limits`` inside the block (per request, or around a local client call)."""
    token = _CURRENT.set(limits)
    try:
        yield
    finally:
        _CURRENT.reset(token)


class ApplyLimits:
    """ASGI middleware: every HTTP request is validated with the limits of the settings read now
    (tests change settings live), in the task that validates its body."""

    def __init__(self, app: Any, settings: Callable[[], Settings]) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with limits_applied(self.settings().limits):
            await self.app(scope, receive, send)
