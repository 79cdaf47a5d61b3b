"""The limits a request's spec is validated against (``pruning_core.limits.Limits``), in a context variable.

FastAPI validates a request body before any route code runs and passes pydantic no context, so the specs'
validators read the limits from here: :class:`api.limits.ApplyLimits` sets them around each request, the
runners around a stored spec's validation. Outside both (the client, the CLI, tests) the defaults apply.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

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
