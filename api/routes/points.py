"""A sensitivity job's results: its points as JSON or Distiller's CSV, and the parameters it skipped.

Serialising, caching (gzip, ETag) and the kind check are job functions in :mod:`api.jobs`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from api.deps import SessionDep
from api.jobs import points_response, sensitivity_job
from pruning_core.points import SensitivityPoint

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.get("/{job_id}/points", response_model=list[SensitivityPoint])  # the schema: pruning_core.points
async def get_points(
    job_id: int, request: Request, parameter: Annotated[str | None, Query(max_length=300)] = None,
) -> Response:
    """Every field of each point, in model order then sparsity (gzip and ETag once the job succeeded)."""
    return await points_response(request, job_id, "json", parameter)


@router.get("/{job_id}/points.csv", response_class=Response)
async def get_points_csv(job_id: int, request: Request) -> Response:
    return await points_response(request, job_id, "csv", headers={
        "Content-Disposition": f'attachment; filename="sensitivity-{job_id}.csv"'})


@router.get("/{job_id}/skipped")
def get_skipped(job_id: int, session: SessionDep) -> list[dict[str, str]]:
    """Parameters the analysis could not measure (e.g. biases, BatchNorm, 1-D tensors) and why."""
    job = sensitivity_job(session, job_id)
    return list((job.result or {}).get("skipped", []))
