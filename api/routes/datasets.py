"""Datasets: the built-in names plus registered ones (a name bound to a kind, a root and options)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from sqlalchemy import select

from api.deps import SessionDep, SettingsDep
from api.jobs import resolve_dataset_root
from api.schemas import DatasetCreate, DatasetOut
from api.store.models import DatasetEntry
from pruning_core.names import DATASET_NAMES, DATASETS_WITH_ROOT

router = APIRouter(prefix="/datasets", tags=["datasets"])
BUILTIN = [DatasetOut(name=n, kind=n, root=None, options={}, builtin=True) for n in DATASET_NAMES]


@router.get("", response_model=list[DatasetOut])
def list_datasets(session: SessionDep) -> list[DatasetOut]:
    rows = session.scalars(select(DatasetEntry).order_by(DatasetEntry.name)).all()
    return [*BUILTIN, *(DatasetOut.model_validate(r) for r in rows)]


@router.get("/{name}", response_model=DatasetOut)
def get_dataset(name: str, session: SessionDep) -> DatasetOut:
    for builtin in BUILTIN:
        if builtin.name == name:
            return builtin
    row = session.scalar(select(DatasetEntry).where(DatasetEntry.name == name))
    if row is None:
        raise HTTPException(404, f"dataset {name!r} is neither built in nor registered")
    return DatasetOut.model_validate(row)


@router.post("", status_code=201, response_model=DatasetOut)
def register_dataset(body: DatasetCreate, session: SessionDep, settings: SettingsDep) -> DatasetOut:
    if body.name in DATASET_NAMES or session.scalar(select(DatasetEntry.id).where(DatasetEntry.name == body.name)):
        raise HTTPException(409, f"name: a dataset named {body.name!r} already exists")
    root = None
    if body.root is not None:
        root = str(resolve_dataset_root(settings, body.root, "root"))
    elif body.kind in DATASETS_WITH_ROOT:
        raise HTTPException(422, f"root: dataset kind {body.kind!r} reads files and needs a root")
    row = DatasetEntry(name=body.name, kind=body.kind, root=root, options=body.options)
    session.add(row)
    session.commit()
    return DatasetOut.model_validate(row)
