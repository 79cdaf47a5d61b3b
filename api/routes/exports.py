"""``POST /jobs/{id}/export/mlflow``: the server logs a job as one MLflow run (``api.export``).

Torch-free and cheap (a few SQL reads, then MLflow's client), so it runs in the API process, in the
request's worker thread. The server writes where the tracking URI says, so a request may name only an
``http(s)`` tracking server; a local store (``sqlite:``, ``file:``, a path) only as the operator's
``PRUNESCOPE_MLFLOW_TRACKING_URI``, the default. A client that reaches the tracker itself exports from
its side instead (``Client.export_mlflow``, ``prunescope export mlflow``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from api.deps import SessionDep, SettingsDep
from api.export.content import from_store
from pruning_core.limits import MAX_MESSAGE_CHARS, clip

router = APIRouter(prefix="/jobs", tags=["exports"])


class MlflowExport(BaseModel):
    tracking_uri: Annotated[str | None, Field(max_length=2000)] = None  # default PRUNESCOPE_MLFLOW_TRACKING_URI
    experiment: Annotated[str | None, Field(min_length=1, max_length=250)] = None


class MlflowRun(BaseModel):
    run_id: str
    experiment_id: str
    tracking_uri: str


def tracking_uri_for(body: MlflowExport, configured: str) -> str:
    """The URI this request may export to: the configured one, or any http(s) tracking server (422 else)."""
    uri = body.tracking_uri or configured
    if not uri:
        raise HTTPException(422, "tracking_uri: give an MLflow tracking server (http(s)://...) or set "
                                 "PRUNESCOPE_MLFLOW_TRACKING_URI on the server")
    if uri != configured and not uri.startswith(("http://", "https://")):
        raise HTTPException(422, "tracking_uri: a request may name only an http(s) tracking server; a local "
                                 "store (sqlite:, file:) only as the server's PRUNESCOPE_MLFLOW_TRACKING_URI")
    return uri


@router.post("/{job_id}/export/mlflow", response_model=MlflowRun)
def export_job_to_mlflow(job_id: int, body: MlflowExport, request: Request, session: SessionDep,
                         settings: SettingsDep) -> MlflowRun:
    """Log the job as one MLflow run (params, metrics with sparsity per-mille as the step, table, figure, files)."""
    from api.export.mlflow import MISSING, export_mlflow

    uri = tracking_uri_for(body, settings.mlflow_tracking_uri)
    try:
        export = from_store(session, job_id, settings.data_dir, server=settings.public_url or str(request.base_url))
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from None
    session.close()  # no SQL connection held while MLflow works
    try:
        own = uri == settings.mlflow_tracking_uri  # the operator's store: its artifact location too
        run = export_mlflow(export, uri, body.experiment or settings.mlflow_experiment,
                            artifact_location=(settings.mlflow_artifact_location or None) if own else None)
    except ImportError:
        raise HTTPException(501, MISSING) from None
    except Exception as exc:  # noqa: BLE001 - the tracker's failure (unreachable, refused) is a bad gateway
        raise HTTPException(502, f"MLflow export to {uri} failed: {clip(str(exc), MAX_MESSAGE_CHARS)}") from None
    return MlflowRun(**run)
