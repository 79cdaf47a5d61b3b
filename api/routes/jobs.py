"""Jobs: create (validated spec), list, get, cancel, delete, epochs and artifacts.

The rules behind each route are job functions in :mod:`api.jobs`; points are in
:mod:`api.routes.points`, the progress streams in :mod:`api.routes.events`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from api import jobs
from api.deps import DispatcherDep, SessionDep, SettingsDep, not_found
from api.jobs import ExperimentQuery, KindQuery, StatusQuery, submit_job
from api.schemas import ArtifactOut, EpochOut, JobCreate, JobDetail, JobOut, Page
from api.store import repo
from api.store.models import Artifact, EpochMetric, Job

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.post("", status_code=201, response_model=JobOut)
def create_job(
    body: Annotated[JobCreate, Body()], session: SessionDep, settings: SettingsDep, dispatcher: DispatcherDep
) -> Job:
    return submit_job(session, settings, dispatcher, body)


@router.get("", response_model=Page)
def list_jobs(
    session: SessionDep,
    status: StatusQuery = None,
    kind: KindQuery = None,
    experiment: ExperimentQuery = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
    q: Annotated[str | None, Query(max_length=200, description="search: id, kind, status, model, dataset, name, "
                                   "tags or experiment name (case-insensitive substring)")] = None,
    sort: Annotated[str, Query(max_length=20, description=f"one of {', '.join(repo.JOB_SORTS)}; a leading - "
                               "sorts descending")] = repo.DEFAULT_JOB_SORT,
) -> dict[str, Any]:
    """A page of jobs with the total the filters match; page on with ``offset`` (``limit`` at most 1000)."""
    return jobs.job_page(session, status, kind, experiment, limit, offset, search=q, sort=sort)


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
