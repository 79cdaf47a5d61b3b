"""Datasets: the built-in names, registered ones (a name bound to a kind, a root and options), and the plugin
datasets live workers publish (``prunescope.datasets`` entry points installed where jobs run)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from sqlalchemy import select

from api.deps import SessionDep, SettingsDep
from api.jobs import resolve_dataset_root
from api.schemas import DatasetCreate, DatasetOut
from api.store import repo
from api.store.models import DatasetEntry
from pruning_core.dataset_options import dataset_task
from pruning_core.names import DATASET_NAMES, DATASETS_WITH_ROOT

router = APIRouter(prefix="/datasets", tags=["datasets"])
BUILTIN = [DatasetOut(name=n, kind=n, root=None, options={}, builtin=True, task=dataset_task(n))
           for n in DATASET_NAMES]


def published(session: SessionDep, settings: SettingsDep) -> list[DatasetOut]:
    """The plugin datasets live workers publish, each with the workers that load it."""
    by_name: dict[str, DatasetOut] = {}
    for row in repo.live_capabilities(session, stale_s=settings.heartbeat_stale_s):
        for d in row.datasets or ():
            entry = by_name.setdefault(d["name"], DatasetOut(name=d["name"], kind=d["name"], root=None, options={},
                                                             task=d.get("task", "classification"), published_by=[]))
            entry.published_by.append(row.worker)  # type: ignore[union-attr]
    return [by_name[n] for n in sorted(by_name)]


@router.get("", response_model=list[DatasetOut])
def list_datasets(session: SessionDep, settings: SettingsDep) -> list[DatasetOut]:
    rows = session.scalars(select(DatasetEntry).order_by(DatasetEntry.name)).all()
    return [*BUILTIN, *(registered(r) for r in rows), *published(session, settings)]


def registered(row: DatasetEntry) -> DatasetOut:
    """A registered dataset as listed: its kind's task."""
    return DatasetOut.model_validate(row).model_copy(update={"task": dataset_task(row.kind)})


@router.get("/{name}", response_model=DatasetOut)
def get_dataset(name: str, session: SessionDep, settings: SettingsDep) -> DatasetOut:
    for builtin in BUILTIN:
        if builtin.name == name:
            return builtin
    row = session.scalar(select(DatasetEntry).where(DatasetEntry.name == name))
    if row is None:
        for plugin in published(session, settings):
            if plugin.name == name:
                return plugin
        raise HTTPException(404, f"dataset {name!r} is neither built in nor registered, and no live worker "
                                 "publishes it")
    return registered(row)


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
    return registered(row)
