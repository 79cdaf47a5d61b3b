"""Schedule validation, plans (sensitivity + tolerance -> YAML, launched as a prune job), comparison."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from sqlalchemy import select

from api.compute import run_helper
from api.deps import DispatcherDep, SessionDep, SettingsDep, get_or_404
from api.routes.jobs import submit_job
from api.schemas import (
    DATA_FIELDS,
    JobOut,
    PlanLaunch,
    PlanRequest,
    PruneJobCreate,
    PruneSpec,
    ScheduleCheck,
    SchedulePreview,
    SchedulePreviewRequest,
    ScheduleResult,
)
from api.settings import Settings
from api.store import repo
from api.store.models import POINT_ORDER, Job, SensitivityPointRow

router = APIRouter(tags=["planning"])


@router.post("/schedules/validate", response_model=ScheduleResult)
def validate_schedule(body: ScheduleCheck) -> dict[str, Any]:
    """Always 200 with ``valid`` true/false: an invalid schedule is the answer, not a bad request."""
    return run_helper("validate_schedule", {"yaml": body.yaml})


@router.post("/schedules/preview", response_model=SchedulePreview)
def preview_schedule(body: SchedulePreviewRequest, session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    """Walk a schedule without training: per epoch the lr, each parameter's target sparsity, thinning."""
    model = _model_ref(session, settings, {"model": body.model})
    out = run_helper("preview_schedule", {"yaml": body.yaml, "model": model, "epochs": body.epochs, "lr": body.lr})
    if "error" in out:
        raise HTTPException(422, out["error"] if out["error"].startswith("model:") else f"yaml: {out['error']}")
    return out


def _finished_sensitivity(session: SessionDep, job_id: int, field: str) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise HTTPException(422, f"{field}: job {job_id} does not exist")
    if job.kind != "sensitivity":
        raise HTTPException(422, f"{field}: job {job_id} is a {job.kind} job, not a sensitivity job")
    if job.status != "succeeded":
        raise HTTPException(409, f"{field}: job {job_id} is {job.status}; plan from a succeeded job")
    return job


def _model_ref(session: SessionDep, settings: Settings, spec: dict[str, Any]) -> dict[str, Any]:
    """Architecture and checkpoint path of a job's model, for the helper to build it."""
    arch, checkpoint = repo.model_source(session, spec["model"], settings.data_dir)
    return {"arch": arch, "checkpoint": checkpoint}


def _plan(session: SessionDep, settings: Settings, body: PlanRequest) -> dict[str, Any]:
    """The helper's plan: ``yaml``, ``levels``, ``tolerance`` and ``overall_sparsity``."""
    job = _finished_sensitivity(session, body.sensitivity_job, "sensitivity_job")
    rows = session.execute(
        select(SensitivityPointRow.parameter, SensitivityPointRow.sparsity, SensitivityPointRow.top1,
               SensitivityPointRow.top5, SensitivityPointRow.loss, SensitivityPointRow.group,
               SensitivityPointRow.measured)
        .where(SensitivityPointRow.job_id == body.sensitivity_job).order_by(*POINT_ORDER)
    )
    payload = {"points": [dict(r._mapping) for r in rows], "max_drop": body.max_drop, "metric": body.metric,
               "epochs": body.epochs, "one_shot": body.one_shot, "target_sparsity": body.target_sparsity}
    if body.target_sparsity is not None:
        payload["model"] = _model_ref(session, settings, job.spec)
    out = run_helper("make_plan", payload)
    if "error" in out:
        raise HTTPException(422, f"{'max_drop' if body.target_sparsity is None else 'target_sparsity'}: "
                                 f"{out['error']}")
    return out


@router.post("/plans")
def make_plan(body: PlanRequest, session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    """``yaml`` (the schedule), ``levels`` per parameter, the ``tolerance`` used and ``overall_sparsity``
    (known with ``target_sparsity``)."""
    return _plan(session, settings, body)


@router.post("/plans/launch", status_code=201, response_model=JobOut)
def launch_plan(body: PlanLaunch, session: SessionDep, settings: SettingsDep, dispatcher: DispatcherDep) -> Job:
    """Plan, then run the schedule as a prune job on the sensitivity job's model and dataset."""
    source = get_or_404(session, Job, body.sensitivity_job, "job")
    yaml_text = _plan(session, settings, body)["yaml"]
    spec = {k: v for k, v in source.spec.items() if k in DATA_FIELDS}
    spec.update(schedule=yaml_text, epochs=body.epochs, lr=body.lr, thin=body.thin, register_as=body.register_as)
    job_body = PruneJobCreate(kind="prune", spec=PruneSpec(**spec), experiment_id=body.experiment_id or
                              source.experiment_id)
    return submit_job(session, settings, dispatcher, job_body)


@router.get("/compare")
def compare(
    session: SessionDep,
    jobs: Annotated[list[int], Query(min_length=2, max_length=20, description="two or more sensitivity jobs")],
    metric: Annotated[str, Query(pattern="^(top1|top5|loss)$")] = "top1",
) -> dict[str, Any]:
    """Side by side: for every (parameter, sparsity) the metric of each job (null where absent)."""
    if len(set(jobs)) != len(jobs):
        raise HTTPException(422, "jobs (query): a job is listed twice")
    for job_id in jobs:
        job = session.get(Job, job_id)
        if job is None:
            raise HTTPException(404, f"jobs (query): job {job_id} does not exist")
        if job.kind != "sensitivity":
            raise HTTPException(422, f"jobs (query): job {job_id} is a {job.kind} job, not a sensitivity job")
    column = getattr(SensitivityPointRow, metric)
    rows = session.execute(
        select(SensitivityPointRow.job_id, SensitivityPointRow.parameter, SensitivityPointRow.sparsity, column)
        .where(SensitivityPointRow.job_id.in_(jobs))
        .order_by(*POINT_ORDER)
    ).all()
    table: dict[tuple[str, float], dict[str, Any]] = {}
    for job_id, parameter, sparsity, value in rows:
        entry = table.setdefault((parameter, sparsity), {"parameter": parameter, "sparsity": sparsity,
                                                         "values": {str(j): None for j in jobs}})
        entry["values"][str(job_id)] = value
    return {"jobs": jobs, "metric": metric, "rows": list(table.values())}
