"""Artifact download: files under the data dir's ``artifacts`` folder, served with their sha256.

The stored path is re-checked at every download: a symlink planted in the folder, or a row edited to
``../..``, must not turn the endpoint into a reader of arbitrary files."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from api.deps import IdPath, SessionDep, SettingsDep, confined, get_or_404
from api.schemas import ArtifactOut
from api.store.models import Artifact

router = APIRouter(prefix="/artifacts", tags=["artifacts"])


@router.get("/{artifact_id}", response_model=ArtifactOut)
def get_artifact(artifact_id: IdPath, session: SessionDep) -> Artifact:
    return get_or_404(session, Artifact, artifact_id, "artifact")


@router.get("/{artifact_id}/download", response_class=FileResponse)
def download_artifact(artifact_id: IdPath, session: SessionDep, settings: SettingsDep) -> FileResponse:
    art = get_or_404(session, Artifact, artifact_id, "artifact")
    path = confined(settings.artifacts_dir, settings.data_dir / art.path)
    if path is None:
        raise HTTPException(403, f"artifact {artifact_id}: its file resolves outside the artifacts directory; refused")
    if not path.is_file():
        raise HTTPException(410, f"artifact {artifact_id}: its file {art.path} is gone from the data dir")
    return FileResponse(path, filename=art.name, headers={"X-Checksum-SHA256": art.sha256})
