"""The request limits a spec is validated against, taken from the app's settings for each request.

FastAPI validates a request body before any route code runs and passes pydantic no context, so the
schemas read the limits from a context variable that :class:`ApplyLimits` sets around each request.
Outside a request (the client, the CLI, tests building specs) the library defaults apply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from api.shared.limits import limits_applied
from api.shared.settings import Settings


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
