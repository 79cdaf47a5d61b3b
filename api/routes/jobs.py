"""Jobs: create (validated spec), list, get, cancel, delete, points (JSON/CSV), epochs, SSE events."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.compute import run_helper
from api.deps import DispatcherDep, SessionDep, SettingsDep, get_or_404
from api.dispatch import Dispatcher, dispatch_job
from api.schemas import (
    ArtifactOut,
    EpochOut,
    JobCreate,
    JobDetail,
    JobOut,
    Page,
    PruneJobCreate,
    SensitivityJobCreate,
    ShardOut,
    known_architecture,
)
from api.settings import Settings
from api.store import repo
from api.store.models import (
    JOB_KINDS,
    JOB_STATUSES,
    POINT_FIELDS,
    TERMINAL_STATUSES,
    Artifact,
    DatasetEntry,
    EpochMetric,
    Experiment,
    Job,
    JobShard,
    ModelEntry,
    SensitivityPointRow,
)
from api.version import code_version
from pruning_core.names import DATASET_NAMES, DATASETS_WITH_ROOT

router = APIRouter(prefix="/jobs", tags=["jobs"])
CSV_HEADER = ("parameter", "sparsity", "top1", "top5", "loss")


def _bad(field: str, message: str) -> HTTPException:
    return HTTPException(422, f"{field}: {message}")


def resolve_dataset_root(settings: Settings, root: str, field: str) -> Path:
    """A dataset path is accepted only when it resolves under a configured root (no escapes)."""
    path = Path(root).expanduser()
    resolved = (path if path.is_absolute() else settings.roots[0] / path).resolve()
    for allowed in settings.roots:
        if resolved.is_relative_to(allowed):
            return resolved
    roots = ", ".join(str(r) for r in settings.roots)
    raise _bad(field, f"{root!r} resolves outside the dataset roots ({roots}); set PRUNESCOPE_DATASET_ROOTS")


def validate_spec_names(session: Session, settings: Settings, spec: Any) -> None:
    """Model and dataset names must be built in or registered; roots must stay under the allowed ones."""
    model = session.scalar(select(ModelEntry).where(ModelEntry.name == spec.model))
    if model is None and known_architecture(spec.model) is None:
        raise _bad("spec.model", f"unknown model {spec.model!r}: neither a registered model nor an architecture "
                                 "(e.g. digits-cnn, resnet20-cifar, resnet18)")
    if model is not None and model.validation != "valid":
        raise _bad("spec.model", f"model {spec.model!r} has an unusable checkpoint ({model.validation})")
    registered = session.scalar(select(DatasetEntry).where(DatasetEntry.name == spec.dataset))
    if registered is None and spec.dataset not in DATASET_NAMES:
        raise _bad("spec.dataset", f"unknown dataset {spec.dataset!r}; built in: {', '.join(DATASET_NAMES)}")
    root = spec.dataset_options.get("root")
    if root is not None:
        if not isinstance(root, str):
            raise _bad("spec.dataset_options.root", "must be a path string")
        resolve_dataset_root(settings, root, "spec.dataset_options.root")
    elif registered is None and spec.dataset in DATASETS_WITH_ROOT:
        raise _bad("spec.dataset_options.root", f"dataset {spec.dataset!r} reads files: give root=<path>")


def submit_job(
    session: Session, settings: Settings, dispatcher: Dispatcher, body: Any
) -> Job:
    """Validate, insert and dispatch one job (shared by POST /jobs and plan launches)."""
    spec = body.spec
    validate_spec_names(session, settings, spec)
    if body.experiment_id is not None and session.get(Experiment, body.experiment_id) is None:
        raise _bad("experiment_id", f"experiment {body.experiment_id} does not exist")
    if isinstance(body, PruneJobCreate):
        check = run_helper("validate_schedule", {"yaml": spec.schedule})
        if not check["valid"]:
            raise _bad("spec.schedule", check["error"])
    shards = 1
    if isinstance(body, SensitivityJobCreate):
        shards = spec.shards or settings.sensitivity_shards
    job = repo.create_job(
        session, kind=body.kind, spec=spec.model_dump(mode="json"), shards=shards,
        experiment_id=body.experiment_id, code_version=code_version(),
    )
    if isinstance(body, SensitivityJobCreate):
        job.progress_total = len(spec.levels) * (len(spec.params) if spec.params else 0)
    session.commit()
    dispatch_job(dispatcher, job.id, shards)
    return job


@router.post("", status_code=201, response_model=JobOut)
def create_job(
    body: Annotated[JobCreate, Body()], session: SessionDep, settings: SettingsDep, dispatcher: DispatcherDep
) -> Job:
    return submit_job(session, settings, dispatcher, body)


@router.get("", response_model=Page)
def list_jobs(
    session: SessionDep,
    status: Annotated[str | None, Query(description=f"one of {', '.join(JOB_STATUSES)}")] = None,
    kind: Annotated[str | None, Query(description=f"one of {', '.join(JOB_KINDS)}")] = None,
    experiment: Annotated[int | None, Query(ge=1)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    if status is not None and status not in JOB_STATUSES:
        raise _bad("status (query)", f"unknown status {status!r}; one of {', '.join(JOB_STATUSES)}")
    if kind is not None and kind not in JOB_KINDS:
        raise _bad("kind (query)", f"unknown kind {kind!r}; one of {', '.join(JOB_KINDS)}")
    query = select(Job)
    for column, value in ((Job.status, status), (Job.kind, kind), (Job.experiment_id, experiment)):
        if value is not None:
            query = query.where(column == value)
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    rows = session.scalars(query.order_by(Job.id.desc()).limit(limit).offset(offset)).all()
    items = [JobOut.model_validate(r).model_dump(mode="json") for r in rows]
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.get("/{job_id}", response_model=JobDetail)
def get_job(job_id: int, session: SessionDep) -> dict[str, Any]:
    job = get_or_404(session, Job, job_id, "job")
    shards = session.scalars(select(JobShard).where(JobShard.job_id == job_id).order_by(JobShard.index)).all()
    out = JobOut.model_validate(job).model_dump()
    out["shards"] = [ShardOut.model_validate(s) for s in shards]
    return out


@router.post("/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: int, session: SessionDep) -> Job:
    job = get_or_404(session, Job, job_id, "job")
    if job.status in TERMINAL_STATUSES:
        raise HTTPException(409, f"job {job_id} is already {job.status}; only queued or running jobs can be cancelled")
    repo.request_cancel(session, job)
    return job


@router.delete("/{job_id}", status_code=204)
def delete_job(job_id: int, session: SessionDep, settings: SettingsDep) -> Response:
    job = get_or_404(session, Job, job_id, "job")
    if job.status not in TERMINAL_STATUSES:
        raise HTTPException(409, f"job {job_id} is {job.status}: cancel it before deleting")
    repo.delete_job(session, job, settings.data_dir)
    return Response(status_code=204)


def _points(session: Session, job_id: int, parameter: str | None = None, after_id: int = 0) -> list[dict]:
    cols = [SensitivityPointRow.id, *(getattr(SensitivityPointRow, f) for f in POINT_FIELDS)]
    query = select(*cols).where(SensitivityPointRow.job_id == job_id, SensitivityPointRow.id > after_id)
    if parameter is not None:
        query = query.where(SensitivityPointRow.parameter == parameter)
    query = query.order_by(SensitivityPointRow.param_index, SensitivityPointRow.parameter,
                           SensitivityPointRow.sparsity)
    return [dict(r._mapping) for r in session.execute(query)]


def _sensitivity_job(session: Session, job_id: int) -> Job:
    job = get_or_404(session, Job, job_id, "job")
    if job.kind != "sensitivity":
        raise HTTPException(409, f"job {job_id} is a {job.kind} job: points belong to sensitivity jobs")
    return job


@router.get("/{job_id}/points", response_model=list[dict[str, Any]])
def get_points(
    job_id: int, session: SessionDep, parameter: Annotated[str | None, Query(max_length=300)] = None
) -> Response:
    """Every field of each point; serialized directly (plain values) because results can be large."""
    _sensitivity_job(session, job_id)
    return Response(json.dumps(_points(session, job_id, parameter)), media_type="application/json")


def points_csv(rows: list[dict]) -> str:
    """Distiller's sensitivity CSV: ``parameter,sparsity,top1,top5,loss`` (top1/top5 in percent)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for r in rows:
        writer.writerow([r[k] for k in CSV_HEADER])
    return buf.getvalue()


@router.get("/{job_id}/points.csv", response_class=Response)
def get_points_csv(job_id: int, session: SessionDep) -> Response:
    _sensitivity_job(session, job_id)
    return Response(points_csv(_points(session, job_id)), media_type="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="sensitivity-{job_id}.csv"'})


@router.get("/{job_id}/epochs", response_model=list[EpochOut])
def get_epochs(job_id: int, session: SessionDep) -> list[EpochMetric]:
    get_or_404(session, Job, job_id, "job")
    return list(session.scalars(select(EpochMetric).where(EpochMetric.job_id == job_id).order_by(EpochMetric.epoch)))


@router.get("/{job_id}/artifacts", response_model=list[ArtifactOut])
def get_job_artifacts(job_id: int, session: SessionDep) -> list[Artifact]:
    get_or_404(session, Job, job_id, "job")
    return list(session.scalars(select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.id)))


def _snapshot(factory: Any, job_id: int, after_id: int) -> tuple[dict | None, list[dict]]:
    with factory() as session:
        job = session.get(Job, job_id)
        if job is None:
            return None, []
        state = {"id": job.id, "status": job.status, "done": job.progress_done, "total": job.progress_total,
                 "error": job.error}
        return state, _points(session, job_id, after_id=after_id) if job.kind == "sensitivity" else []


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


@router.get("/{job_id}/events")
async def job_events(
    job_id: int, request: Request, session: SessionDep,
    poll_s: Annotated[float, Query(ge=0.05, le=10)] = 0.5,
) -> StreamingResponse:
    """Server-sent events: ``progress`` on every change, ``point`` per new point, ``end`` when finished."""
    get_or_404(session, Job, job_id, "job")
    session.close()
    factory = request.app.state.session_factory

    async def stream() -> AsyncIterator[str]:
        last_id, last_state = 0, None
        while True:
            state, points = await run_in_threadpool(_snapshot, factory, job_id, last_id)
            if state is None:
                yield _sse("end", {"id": job_id, "status": "deleted"})
                return
            for point in points:
                last_id = max(last_id, point.pop("id"))
                yield _sse("point", point)
            if state != last_state:
                yield _sse("progress", state)
                last_state = state
            if state["status"] in TERMINAL_STATUSES:
                yield _sse("end", state)
                return
            if await request.is_disconnected():
                return
            await asyncio.sleep(poll_s)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
