"""Server-sent events: the job list's changes (``/jobs/events``) and one job's progress and points
(``/jobs/{job_id}/events``). Each stream polls the store through a job function of :mod:`api.jobs` in
the thread pool, so it works the same with any dispatcher and any number of API processes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.deps import SessionDep, get_or_404
from api.jobs import ExperimentQuery, KindQuery, StatusQuery, changed_jobs, check_filters, newest_job_id, snapshot
from api.store.changes import change_count
from api.store.models import TERMINAL_STATUSES, Job

router = APIRouter(prefix="/jobs", tags=["jobs"])

PollQuery = Annotated[float, Query(ge=0.05, le=10, description="seconds between looks at the store")]
# no-transform and X-Accel-Buffering keep gzip middlewares and nginx from holding events back
_SSE_HEADERS = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


def _sse_doc(*events: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI answer of a stream: its events, each with a JSON ``data`` line, not a JSON body."""
    event = {"type": "object", "required": ["event", "data"], "properties": {
        "event": {"type": "string", "enum": list(events)}, "data": {"type": "string", "description": "JSON"}}}
    return {200: {"description": "server-sent events", "content": {"text/event-stream": {"schema": event}}}}


def _event_stream(events: AsyncIterator[str]) -> StreamingResponse:
    """Both streams' response: unbuffered ``text/event-stream``."""
    return StreamingResponse(events, media_type="text/event-stream", headers=_SSE_HEADERS)


async def _gone_or_wait(request: Request, seconds: float) -> bool:
    """True once the client has disconnected; else wait ``seconds`` before the next look at the store."""
    if await request.is_disconnected():
        return True
    await asyncio.sleep(seconds)
    return False


@router.get("/events", response_class=StreamingResponse, responses=_sse_doc("job", "deleted", "end"))
async def jobs_events(
    request: Request, session: SessionDep,
    status: StatusQuery = None, kind: KindQuery = None, experiment: ExperimentQuery = None,
    poll_s: PollQuery = 0.5,
    max_s: Annotated[float | None, Query(gt=0, le=86400, description="close the stream after this long")] = None,
) -> StreamingResponse:
    """Server-sent events for the whole list: ``job`` with a job's summary whenever it appears or its
    status or progress changes (first every active job, as a snapshot), ``deleted`` when a watched job
    goes away, a comment every 15 s to keep proxies from closing the connection, and ``end`` only
    after ``max_s``. A ``status`` filter keeps the change that takes a job out of it."""
    check_filters(status, kind)
    newest = newest_job_id(session)
    session.close()
    factory = request.app.state.session_factory

    async def stream() -> AsyncIterator[str]:
        nonlocal newest
        known: dict[int, dict[str, Any]] = {}  # active jobs (and new ones), by id, as last sent
        started = last_sent = time.monotonic()
        counter, last_count = change_count(request.app.state), None
        while True:
            count = await counter.read()
            if count is None or count != last_count:  # else nothing the list shows has changed: no query
                last_count = count
                rows = await run_in_threadpool(changed_jobs, factory, kind, experiment, set(known), newest)
                seen = set()
                for row in rows:
                    seen.add(row["id"])
                    newest = max(newest, row["id"])
                    before = known.get(row["id"])
                    if row != before and status in (None, row["status"], (before or {}).get("status")):
                        yield _sse("job", row)
                        last_sent = time.monotonic()
                    if row["status"] in TERMINAL_STATUSES:
                        known.pop(row["id"], None)
                    else:
                        known[row["id"]] = row
                for gone in set(known) - seen:
                    del known[gone]
                    yield _sse("deleted", {"id": gone})
            now = time.monotonic()
            left = float("inf") if max_s is None else started + max_s - now
            if left <= 0:
                yield _sse("end", {"reason": "max_s"})
                return
            if now - last_sent >= 15:
                yield ": keep-alive\n\n"
                last_sent = now
            if await _gone_or_wait(request, min(poll_s, left)):
                return

    return _event_stream(stream())


@router.get("/{job_id}/events", response_class=StreamingResponse,
            responses=_sse_doc("point", "progress", "end"))
async def job_events(
    job_id: int, request: Request, session: SessionDep, poll_s: PollQuery = 0.5,
    points: Annotated[bool, Query(description="false: progress and end only (a table needs no points)")] = True,
) -> StreamingResponse:
    """Server-sent events: ``progress`` on every change, ``point`` per new point, ``end`` when finished."""
    get_or_404(session, Job, job_id, "job")
    session.close()
    factory = request.app.state.session_factory

    async def stream() -> AsyncIterator[str]:
        last_id, last_state = 0, None
        while True:
            state, new_points = await run_in_threadpool(snapshot, factory, job_id, last_id, points)
            if state is None:
                yield _sse("end", {"id": job_id, "status": "deleted"})
                return
            for point in new_points:
                last_id = max(last_id, point.pop("id"))
                yield _sse("point", point)
            if state != last_state:
                yield _sse("progress", state)
                last_state = state
            if state["status"] in TERMINAL_STATUSES:
                yield _sse("end", state)
                return
            if await _gone_or_wait(request, poll_s):
                return

    return _event_stream(stream())
