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

from api import jobs
from api.deps import DispatcherDep, SessionDep, SettingsDep, not_found
from api.jobs import ExperimentQuery, KindQuery, StatusQuery, submit_job
from api.schemas import ArtifactOut, EpochOut, JobCreate, JobDetail, JobOut, Page
from api.store import repo
from api.store.models import Artifact, EpochMetric, Job

router = APIRouter(prefix="/jobs", tags=["jobs"])
#: A listed job's columns, in JobOut's order (the list is JobOut plus ``numbers``).
LIST_FIELDS = tuple(JobOut.model_fields)


class PageCache:
    """Serialized pages of the jobs list, each kept with the stored rows it was made from.

    Every request still reads its page from the store, so a change made by any process shows at once;
    but a page whose stored rows, total and baselines are all equal to the cached ones is served as
    it was, without decoding or serializing anything. Pages over ``max_bytes`` are not kept."""

    def __init__(self, max_entries: int = 32, max_bytes: int = 256 * 1024) -> None:
        self._items: OrderedDict[tuple, tuple[Any, bytes, str]] = OrderedDict()
        self._lock = threading.Lock()
        self.max_entries, self.max_bytes = max_entries, max_bytes

    def body(self, key: tuple, stored: Any, build: Callable[[], bytes]) -> tuple[bytes, str]:
        """``(body, etag)`` of the page read as ``stored``: the cached one if it was made from equal rows."""
        with self._lock:
            item = self._items.get(key)
            if item is not None and item[0] == stored:
                self._items.move_to_end(key)
                return item[1], item[2]
        body = build()
        etag = f'"{hashlib.blake2b(body, digest_size=12).hexdigest()}"'
        if len(body) <= self.max_bytes:
            with self._lock:
                self._items[key] = (stored, body, etag)
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
def list_jobs(
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

    The answer of :func:`api.jobs.job_page`, made cheaply because the list is polled: the page is read
    as stored (:func:`api.store.repo.stored_job_page`, at most two statements), and an unchanged page is
    served from :data:`PAGES` (ETag, 304 to ``If-None-Match``); a changed one is decoded and serialized
    with pydantic's JSON encoder (JobOut's encoding), with no model per row. The session is opened here,
    not by a dependency that would take two more trips to a request thread."""
    jobs.check_filters(status, kind)
    with request.app.state.session_factory() as session:
        try:
            rows, total, baselines = repo.stored_job_page(session, LIST_FIELDS, status=status, kind=kind,
                                                          experiment=experiment, search=q, sort=sort, limit=limit,
                                                          offset=offset)
        except ValueError as exc:
            raise jobs.bad("sort (query)", str(exc)) from None

        def build() -> bytes:
            items = repo.decode_job_rows(session, LIST_FIELDS, rows, baselines)
            return to_json({"items": items, "total": total, "limit": limit, "offset": offset})

        key = (request.app.state.settings.db_url, status, kind, experiment, q, sort, limit, offset)
        body, etag = PAGES.body(key, (rows, total, baselines), build)
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
