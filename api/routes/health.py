"""Liveness with the state of the store, the broker and the compute pool.

Public even with ``PRUNESCOPE_TOKEN`` set (probes carry no token), so URL credentials are masked.

It must answer within a second however busy the server is, so it takes nothing the busy requests
hold: it is an ``async`` route with no sync dependencies (those would wait for a request thread),
its store check uses a one-connection engine of its own (not the pool requests may have exhausted),
and both blocking checks run on two threads of its own, awaited with a timeout; a check still
running is shared by the next probes instead of piling up more of them.

Load balancers and tests poll it many times a second, so each check's answer is reused for
:data:`CACHE_S` (an outage shows within that long): a probe in between costs no thread, no round
trip to the store or the broker. The compute pool's counts are read live (no I/O).
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy import Engine, create_engine, text
from starlette.datastructures import State

from api.compute import pool

router = APIRouter(tags=["health"])
_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]*@")
#: How long one probe waits for a store or broker check before reporting it as not answering.
CHECK_TIMEOUT_S = 0.8
#: How long a store or broker check's answer (a failure or a timeout too) is reused by the next probes.
CACHE_S = 1.0
_checks = ThreadPoolExecutor(max_workers=2, thread_name_prefix="healthz")
_lock = threading.Lock()


def redact(text: str) -> str:
    """``redis://:secret@host`` -> ``redis://***@host``."""
    return _CREDENTIALS.sub("***@", text)


def _store_check(state: State) -> dict[str, Any]:
    """``SELECT 1`` on the probes' own one-connection engine (made on first use, kept on the app)."""
    engine: Engine = state.engine
    try:
        with _lock:
            if getattr(state, "health_engine", None) is None:
                args = ({"check_same_thread": False, "timeout": 2} if engine.dialect.name == "sqlite" else
                        {"connect_timeout": 2} if engine.dialect.name == "postgresql" else {})
                state.health_engine = create_engine(engine.url, pool_size=1, max_overflow=0, pool_timeout=2,
                                                    pool_pre_ping=True, connect_args=args)
        with state.health_engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return {"ok": True, "dialect": engine.dialect.name}
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return {"ok": False, "error": redact(str(exc))}


async def _bounded(state: State, what: str, check: Callable[[], Any]) -> tuple[bool, Any]:
    """``(True, check())`` within CHECK_TIMEOUT_S, else ``(False, why)``; one ``what`` check per app at a time."""
    with _lock:
        if getattr(state, "health_checks", None) is None:
            state.health_checks = {}
        inflight: dict[str, Future] = state.health_checks
        future = inflight.get(what)
        if future is None or future.done():
            future = inflight[what] = _checks.submit(check)
    try:
        return True, await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), CHECK_TIMEOUT_S)
    except TimeoutError:
        return False, f"the {what} check did not answer within {CHECK_TIMEOUT_S:g} s"
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return False, f"the {what} check failed: {exc}"


@dataclass
class CheckCache:
    """The last answer of each check with the time it was asked (``clock``: monotonic seconds)."""

    ttl_s: float = CACHE_S
    clock: Callable[[], float] = time.monotonic
    answers: dict[str, tuple[float, tuple[bool, Any]]] = field(default_factory=dict)


async def _cached(state: State, what: str, check: Callable[[], Any]) -> tuple[bool, Any]:
    """:func:`_bounded`'s answer, reused for ``ttl_s`` after it was asked (one cache per app)."""
    cache: CheckCache | None = getattr(state, "health_cache", None)
    if cache is None:
        cache = state.health_cache = CheckCache()
    asked = cache.clock()
    hit = cache.answers.get(what)
    if hit is not None and asked - hit[0] < cache.ttl_s:
        return hit[1]
    answer = await _bounded(state, what, check)
    cache.answers[what] = (asked, answer)
    return answer


@router.get("/healthz")
async def healthz(request: Request, response: Response) -> dict[str, Any]:
    state = request.app.state
    dispatcher = state.dispatcher
    done, store = await _cached(state, "store", lambda: _store_check(state))
    if not done:
        store = {"ok": False, "error": store}
    done, answer = await _cached(state, "broker", dispatcher.healthy)
    ok, detail = answer if done else (False, answer)
    broker = {"ok": ok, "kind": dispatcher.name, "detail": redact(detail)}
    healthy = store["ok"] and ok
    if not healthy:
        response.status_code = 503
    return {"ok": healthy, "store": store, "broker": broker, "compute": pool().stats()}
