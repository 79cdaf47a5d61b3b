"""The model registry: list, get, upload a checkpoint (size-limited, statically checked, no torch).

A checkpoint is a ``torch.save`` zip or a safetensors file, or a ``torch.export`` program (``.pt2``, registered
with architecture ``torch-export``: its graph is its architecture), told apart by content (never by its name);
the stored artifact is the uploaded file as it came, named with its format's suffix.

An upload is a plain (threaded) route: copying and scanning a file of up to the upload limit must
never run on the event loop, and the scan itself runs in the bounded helper pool (api.compute). The
scan also reads the tensors' declared shapes (torch-free), which are checked against the architecture's
published facts (a checkpoint of another architecture is refused, naming the parameters that differ)
and stored on the model, so previews and plans of it need no torch.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, UploadFile
from sqlalchemy import select

from api.checkpoint_scan import UnsafeCheckpoint, check_checkpoint
from api.deps import SessionDep, SettingsDep
from api.jobs import require_published
from api.schemas import ModelOut, Name, known_architecture
from api.shared.specs import check_registry_name
from api.store import repo
from api.store.models import ModelEntry
from api.store.repo import ParameterFacts
from pruning_core.checkpoint_scan import FORMAT_PROGRAM, FORMAT_SAFETENSORS, ScanResult
from pruning_core.names import EXPORTED_ARCHITECTURE
from pruning_core.preview import default_prunable

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


def _file_name(given: str | None, model: str, fmt: str | None = None) -> str:
    """The client's file name reduced to a safe basename: it becomes part of a path on our disk. A safetensors
    file's name ends in ``.safetensors`` (a program's in ``.pt2``) whatever the client called it, so the artifact
    says its format."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", (given or "").replace("\\", "/").rsplit("/", 1)[-1]).lstrip(".")
    base = base[:100] or f"{model}.pt"
    suffix = {FORMAT_SAFETENSORS: ".safetensors", FORMAT_PROGRAM: ".pt2"}.get(fmt or "")
    if suffix is not None and not base.endswith(suffix):
        base = f"{base.rsplit('.', 1)[0] if '.' in base else base}{suffix}"
    return base


#: state_dict entries that are buffers, not parameters, in torch's own layers (BatchNorm's statistics).
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")
#: How many parameters a mismatch message names per kind of difference.
SHOWN = 5


def _listed(names: list[str]) -> str:
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def misfit(arch: str, scanned: ScanResult, facts: ParameterFacts) -> str | None:
    """Why the checkpoint's tensors are not ``arch``'s parameters (missing, unexpected, other shapes), or
    None. A thinned checkpoint keeps its smaller shapes on purpose, so only its names are compared."""
    ck = scanned.shapes
    missing = [n for n in facts.shapes if n not in ck]
    unexpected = [n for n in ck if n not in facts.shapes and n.rsplit(".", 1)[-1] in ("weight", "bias")]
    wrong = [] if scanned.thinned else [
        f"{n} {list(ck[n])} (expected {list(dims)})" for n, dims in facts.shapes.items()
        if ck.get(n) is not None and tuple(ck[n]) != tuple(dims)]
    if not (missing or unexpected or wrong):
        return None
    parts = [f"missing {len(missing)} parameters: {_listed(missing)}" if missing else "",
             f"unexpected parameters: {_listed(unexpected)}" if unexpected else "",
             f"other shapes: {_listed(wrong)}" if wrong else ""]
    return (f"checkpoint: not a checkpoint of architecture {arch!r} ({'; '.join(p for p in parts if p)}); upload it "
            "with the architecture it was trained as")


def stored_shapes(scanned: ScanResult, facts: ParameterFacts | None) -> tuple[list[Any] | None, list[str] | None]:
    """The upload's ``shapes`` and ``prunable`` columns: its parameters in the architecture's order with the
    checkpoint's own sizes (thinned ones included) when the architecture is known, else every tensor but
    BatchNorm statistics in file order, with :func:`default_prunable`. None where a size is undeclared."""
    ck: Mapping[str, tuple[int, ...] | None] = scanned.shapes
    names = [n for n in facts.shapes if n in ck] if facts is not None else \
        [n for n in ck if n.rsplit(".", 1)[-1] not in BUFFER_SUFFIXES]
    if any(ck[n] is None for n in names):
        return None, None
    shapes = {n: tuple(ck[n] or ()) for n in names}
    prunable = [n for n in facts.prunable if n in shapes] if facts is not None else default_prunable(shapes)
    return repo.shapes_json(shapes), prunable


@router.post("", status_code=201, response_model=ModelOut)
def upload_model(
    session: SessionDep,
    settings: SettingsDep,
    name: Annotated[Name, Form()],
    checkpoint: Annotated[UploadFile, File(description="a torch.save checkpoint (zip format) or a safetensors "
                                                       "file of the architecture's state_dict, or a torch.export "
                                                       "program (.pt2), which needs no architecture")],
    architecture: Annotated[str | None, Form(min_length=1, max_length=100)] = None,
) -> ModelEntry:
    try:
        check_registry_name(name)
    except ValueError as exc:
        raise HTTPException(422, f"name: {exc}") from None
    arch = None  # none given (or the programs' own): the content decides, after the scan
    if architecture not in (None, EXPORTED_ARCHITECTURE):
        arch = known_architecture(architecture)
        if arch is None:  # a plugin's or timm's: weights for it are welcome while a live worker builds it
            require_published(session, settings, architecture, "architecture")
            arch = architecture
    if session.scalar(select(ModelEntry.id).where(ModelEntry.name == name)) is not None:
        raise HTTPException(409, f"name: a model named {name!r} is already registered")
    facts = repo.architecture_facts(session, arch) if arch is not None else None
    session.commit()  # hand the connection back while the scan waits for the pool
    limit = settings.max_upload_bytes
    uploads = settings.data_dir / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=uploads, suffix=".pt") as tmp:  # a path the helper can open
        size = 0
        checkpoint.file.seek(0)
        while chunk := checkpoint.file.read(1 << 20):
            size += len(chunk)
            if size > limit:
                raise HTTPException(413, f"checkpoint: larger than the {settings.max_upload_mb:g} MB upload limit "
                                         "(PRUNESCOPE_MAX_UPLOAD_MB)")
            tmp.write(chunk)
        if size == 0:
            raise HTTPException(422, "checkpoint: the uploaded file is empty")
        tmp.flush()
        try:
            scanned = check_checkpoint(Path(tmp.name), settings)
        except UnsafeCheckpoint as exc:
            hint = "; without an architecture only a torch.export program (.pt2) is accepted" if arch is None else ""
            raise HTTPException(422, f"checkpoint: {exc}{hint}") from None
        if scanned.format == FORMAT_PROGRAM:
            if arch is not None:
                raise HTTPException(422, f"architecture: the file is a torch.export program, whose graph is its "
                                         f"architecture; upload it without one (not {arch!r})")
            arch = EXPORTED_ARCHITECTURE
        elif arch is None:
            raise HTTPException(422, "architecture: a checkpoint needs the architecture it was trained as "
                                     "(GET /api/v1/architectures); only a torch.export program (.pt2) needs none")
        named = scanned.metadata.get("arch")
        if named is not None and known_architecture(named) != arch:
            raise HTTPException(422, f"checkpoint: its safetensors metadata names architecture {named[:80]!r}, not "
                                     f"{arch!r}; upload it with the architecture it was saved as")
        if facts is not None and (why := misfit(arch, scanned, facts)) is not None:
            raise HTTPException(422, why)
        tmp.seek(0)
        artifact = repo.store_artifact(session, settings.data_dir, kind="checkpoint",
                                       name=_file_name(checkpoint.filename, name, scanned.format), source=tmp)
    shapes, prunable = stored_shapes(scanned, facts)
    model = ModelEntry(name=name, architecture=arch, artifact_id=artifact.id, checkpoint_sha256=artifact.sha256,
                       metrics=dict(scanned.program), validation="valid", shapes=shapes, prunable=prunable)
    session.add(model)
    session.commit()
    return model
