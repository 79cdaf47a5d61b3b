"""The model registry: list, get, upload a checkpoint (size-limited, statically checked, no torch)."""

from __future__ import annotations

import re
import tempfile
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, UploadFile
from sqlalchemy import select

from api.checkpoint_scan import UnsafeCheckpoint, check_checkpoint
from api.deps import SessionDep, SettingsDep
from api.schemas import ModelOut, Name, known_architecture
from api.store import repo
from api.store.models import ModelEntry

router = APIRouter(prefix="/models", tags=["models"])


@router.get("", response_model=list[ModelOut])
def list_models(session: SessionDep) -> list[ModelEntry]:
    return list(session.scalars(select(ModelEntry).order_by(ModelEntry.id)))


def _model(session: SessionDep, name: str) -> ModelEntry:
    model = session.scalar(select(ModelEntry).where(ModelEntry.name == name))
    if model is None:
        raise HTTPException(404, f"model {name!r} is not registered")
    return model


@router.get("/{name}", response_model=ModelOut)
def get_model(name: str, session: SessionDep) -> ModelEntry:
    return _model(session, name)


def _file_name(given: str | None, model: str) -> str:
    """The client's file name reduced to a safe basename: it becomes part of a path on our disk."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", (given or "").replace("\\", "/").rsplit("/", 1)[-1]).lstrip(".")
    return base[:100] or f"{model}.pt"


@router.post("", status_code=201, response_model=ModelOut)
async def upload_model(
    session: SessionDep,
    settings: SettingsDep,
    name: Annotated[Name, Form()],
    architecture: Annotated[str, Form(min_length=1, max_length=100)],
    checkpoint: Annotated[UploadFile, File(description="a torch.save checkpoint (zip format)")],
) -> ModelEntry:
    arch = known_architecture(architecture)
    if arch is None:
        raise HTTPException(422, f"architecture: unknown architecture {architecture!r}")
    if session.scalar(select(ModelEntry.id).where(ModelEntry.name == name)) is not None:
        raise HTTPException(409, f"name: a model named {name!r} is already registered")
    limit = settings.max_upload_bytes
    with tempfile.SpooledTemporaryFile(max_size=8 * 2**20) as tmp:
        size = 0
        while chunk := await checkpoint.read(1 << 20):
            size += len(chunk)
            if size > limit:
                raise HTTPException(413, f"checkpoint: larger than the {settings.max_upload_mb:g} MB upload limit "
                                         "(PRUNESCOPE_MAX_UPLOAD_MB)")
            tmp.write(chunk)
        if size == 0:
            raise HTTPException(422, "checkpoint: the uploaded file is empty")
        tmp.seek(0)
        try:
            check_checkpoint(tmp, settings)
        except UnsafeCheckpoint as exc:
            raise HTTPException(422, f"checkpoint: {exc}") from None
        tmp.seek(0)
        artifact = repo.store_artifact(session, settings.data_dir, kind="checkpoint",
                                       name=_file_name(checkpoint.filename, name), source=tmp)
    model = ModelEntry(name=name, architecture=arch, artifact_id=artifact.id, checkpoint_sha256=artifact.sha256,
                       metrics={}, validation="valid")
    session.add(model)
    session.commit()
    return model
