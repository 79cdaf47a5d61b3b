"""Jobs: create (validated spec), list, get, cancel, delete, epochs and artifacts.

The rules behind each route are job functions in :mod:`api.jobs`; points are in
:mod:`api.routes.points`, the progress streams in :mod:`api.routes.events`."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_json
from starlette.concurrency import run_in_threadpool

from api import jobs
from api.deps import DispatcherDep, SessionDep, SettingsDep, not_found
from api.jobs import ExperimentQuery, KindQuery, StatusQuery, submit_job
from api.schemas import ArtifactOut, EpochOut, JobCreate, JobDetail, JobOut, Page
from api.store import repo
from api.store.changes import change_count
from api.store.models import Artifact, EpochMetric, Job

router = APIRouter(prefix="/jobs", tags=["jobs"])
#: A listed job's columns, in JobOut's order (the list is JobOut plus ``numbers``).
LIST_FIELDS = tuple(JobOut.model_fields)


class PageCache:
    """Serialized pages of the jobs list, each kept with the store's change count it was read at
    (:func:`api.store.repo.store_changes`).

    Every request still reads that count from the store, so a change made by any process shows at once;
    but while it is unchanged a page is served as it was, without reading, decoding or serializing its rows.
    The count is read before the rows: a page read at a later state is kept under an earlier count, and is
    read again when the count moves (never stale). Pages over ``max_bytes`` are not kept."""

    def __init__(self, max_entries: int = 32, max_bytes: int = 256 * 1024) -> None:
        self._items: OrderedDict[tuple, tuple[int, bytes, str]] = OrderedDict()
        self._lock = threading.Lock()
        self.max_entries, self.max_bytes = max_entries, max_bytes

    def get(self, key: tuple, changes: int) -> tuple[bytes, str] | None:
        """``(body, etag)`` of the page cached at the store's ``changes``, or None."""
        with self._lock:
            item = self._items.get(key)
            if item is None or item[0] != changes:
                return None
            self._items.move_to_end(key)
            return item[1], item[2]

    def body(self, key: tuple, changes: int, build: Callable[[], bytes]) -> tuple[bytes, str]:
        """``(body, etag)`` of the page at the store's ``changes``: the cached one if it was read at that count."""
        hit = self.get(key, changes)
        if hit is not None:
            return hit
        body = build()
        etag = f'"{hashlib.blake2b(body, digest_size=12).hexdigest()}"'
        if len(body) <= self.max_bytes:
            with self._lock:
                self._items[key] = (changes, body, etag)
                self._items.move_to_end(key)
                while len(self._items) > self.max_entries:
                    self._items.popitem(last=False)
        return body, etag


#: Keys start with the store's URL: two apps in one process (local clients, tests) never share a page.
PAGES = PageCache()


@router.post("", status_code=201, response_model=JobOut)
def create_job(
    body: Annotated[JobCreate, Body()], session: SessionDep, settings: SettingsDep, dispatcher: DispatcherDep
) -> Job:
    return submit_job(session, settings, dispatcher, body)


@router.get("", response_model=Page)
async def list_jobs(
    request: Request,
    status: StatusQuery = None,
    kind: KindQuery = None,
    experiment: ExperimentQuery = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
    q: Annotated[str | None, Query(max_length=200, description="search: id, kind, status, model, dataset, name, "
                                   "tags or experiment name (case-insensitive substring)")] = None,
    sort: Annotated[str, Query(max_length=20, description=f"one of {', '.join(repo.JOB_SORTS)}; a leading - "
                               "sorts descending")] = repo.DEFAULT_JOB_SORT,
) -> Response:
    """A page of jobs with the total the filters match; page on with ``offset`` (``limit`` at most 1000).

    The answer of :func:`api.jobs.job_page`, made cheaply because the list is polled: the store's change
    count (raised by the database on every write the list shows) is read on the event loop
    (:class:`api.store.changes.ChangeCount`), and while it is unchanged the page is served from :data:`PAGES`
    (ETag, 304 to ``If-None-Match``) without a request thread. A changed page is read on a thread as stored
    (:func:`api.store.repo.stored_job_page`, at most two statements), decoded and serialized with pydantic's
    JSON encoder (JobOut's encoding), with no model per row."""
    jobs.check_filters(status, kind)
    state = request.app.state
    key = (state.settings.db_url, status, kind, experiment, q, sort, limit, offset)
    changes = await change_count(state).read()
    hit = PAGES.get(key, changes) if changes is not None else None
    if hit is None:
        hit = await run_in_threadpool(_read_page, state, key, changes, status=status, kind=kind,
                                      experiment=experiment, search=q, sort=sort, limit=limit, offset=offset)
    return _page_response(request, *hit)


def _read_page(state: Any, key: tuple, changes: int | None, **query: Any) -> tuple[bytes, str]:
    """``(body, etag)`` of the page read from the store in a session of its own (the count too, where the
    event loop could not read it), kept in :data:`PAGES` under the count."""
    with state.session_factory() as session:
        if changes is None:
            changes = repo.store_changes(session)

        def build() -> bytes:
            try:
                rows, total, baselines = repo.stored_job_page(session, LIST_FIELDS, **query)
            except ValueError as exc:
                raise jobs.bad("sort (query)", str(exc)) from None
            items = repo.decode_job_rows(session, LIST_FIELDS, rows, baselines)
            return to_json({"items": items, "total": total, "limit": query["limit"], "offset": query["offset"]})

        return PAGES.body(key, changes, build)


def _page_response(request: Request, body: bytes, etag: str) -> Response:
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


class JobLabels(BaseModel):
    """A job's name and tags (kept in its result JSON beside what the runner reports); null removes one."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    tags: list[Annotated[str, Field(min_length=1, max_length=100)]] | None = Field(default=None, max_length=100)


@router.patch("/{job_id}", response_model=JobOut)
def label_job(job_id: int, body: JobLabels, session: SessionDep) -> Job:
    """Name or tag a job at any time (the fields sent are changed; the others are kept)."""
    job = repo.set_labels(session, job_id, body.model_dump(exclude_unset=True))
    if job is None:
        raise not_found("job", job_id)
    session.commit()
    return job


@router.get("/{job_id}", response_model=JobDetail)
def get_job(job_id: int, session: SessionDep) -> dict[str, Any]:
    return jobs.job_detail(session, job_id)


@router.post("/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: int, session: SessionDep, settings: SettingsDep) -> Job:
    """Set the cancel flag; a job no live worker holds (queued, or heartbeats stale) ends at once."""
    return jobs.cancel_job(session, settings, job_id)


@router.delete("/{job_id}", status_code=204)
def delete_job(job_id: int, session: SessionDep, settings: SettingsDep) -> Response:
    """Delete a finished job, or an unfinished one no live worker holds (it is cancelled, then deleted)."""
    jobs.delete_job(session, settings, job_id)
    return Response(status_code=204)


@router.get("/{job_id}/epochs", response_model=list[EpochOut])
def get_epochs(job_id: int, session: SessionDep) -> list[EpochMetric]:
    return jobs.rows_of_job(session, job_id, EpochMetric, EpochMetric.epoch)


@router.get("/{job_id}/artifacts", response_model=list[ArtifactOut])
def get_job_artifacts(job_id: int, session: SessionDep) -> list[Artifact]:
    return jobs.rows_of_job(session, job_id, Artifact, Artifact.id)
