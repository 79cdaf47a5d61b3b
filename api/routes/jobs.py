"""Jobs: create (validated spec), list, get, cancel, delete, epochs and artifacts.

The rules behind each route are job functions in :mod:`api.jobs`; points are in
:mod:`api.routes.points`, the progress streams in :mod:`api.routes.events`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response

from api import jobs
from api.deps import DispatcherDep, SessionDep, SettingsDep
from api.jobs import ExperimentQuery, KindQuery, StatusQuery, submit_job
from api.schemas import ArtifactOut, EpochOut, JobCreate, JobDetail, JobOut, Page
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
) -> dict[str, Any]:
    return jobs.job_page(session, status, kind, experiment, limit, offset)


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
