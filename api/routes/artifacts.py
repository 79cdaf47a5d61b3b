"""Artifact download: files under the data dir, served with their sha256."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from api.deps import SessionDep, SettingsDep, get_or_404
from api.schemas import ArtifactOut
from api.store.models import Artifact

router = APIRouter(prefix="/artifacts", tags=["artifacts"])


@router.get("/{artifact_id}", response_model=ArtifactOut)
def get_artifact(artifact_id: int, session: SessionDep) -> Artifact:
    return get_or_404(session, Artifact, artifact_id, "artifact")


@router.get("/{artifact_id}/download", response_class=FileResponse)
def download_artifact(artifact_id: int, session: SessionDep, settings: SettingsDep) -> FileResponse:
    art = get_or_404(session, Artifact, artifact_id, "artifact")
    path = settings.data_dir / art.path
    if not path.is_file():
        raise HTTPException(410, f"artifact {artifact_id}: its file {art.path} is gone from the data dir")
    return FileResponse(path, filename=art.name, headers={"X-Checksum-SHA256": art.sha256})
