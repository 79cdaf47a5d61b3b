"""Store operations shared by the API and the worker: job lifecycle, idempotent upserts, artifacts.

Everything that changes job state goes through here so that the rules (SQL is the source of truth,
points keyed by (job, parameter, sparsity), shard claims guarded by heartbeats) live in one place.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass
from dataclasses import fields as dataclass_fields
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import JSON, String, Text, and_, bindparam, cast, delete, func, or_, select, type_coerce, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.orm import Session
from sqlalchemy.types import NullType

from api.store.models import (
    ACTIVE_STATUSES,
    POINT_FIELDS,
    POINT_ORDER,
    TERMINAL_STATUSES,
    ArchitectureFacts,
    Artifact,
    EpochMetric,
    Experiment,
    Job,
    JobShard,
    ModelEntry,
    SensitivityPointRow,
    StoreChanges,
    WorkerCapabilities,
    utcnow,
)
from pruning_core.points import SensitivityPoint

EPOCH_COLUMNS = ("train_loss", "top1", "top5", "loss", "lr", "sparsity")


class ArtifactWriteError(OSError):
    """An artifact file could not be written (disk full, read-only data dir); the message names it."""


def _insert(session: Session, table: Any) -> Any:
    """The dialect's INSERT that supports ON CONFLICT (SQLite and PostgreSQL share the syntax)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise RuntimeError(f"unsupported database dialect {dialect!r}: use SQLite or PostgreSQL")


def _upsert(session: Session, table: Any, values: Mapping[str, Any], keys: tuple[str, ...]) -> None:
    stmt = _insert(session, table).values(**values)
    updates = {k: stmt.excluded[k] for k in values if k not in keys}
    session.execute(stmt.on_conflict_do_update(index_elements=list(keys), set_=updates))


POINT_KEY = ("job_id", "parameter", "sparsity")
POINT_DEFAULTS = {f.name: f.default for f in dataclass_fields(SensitivityPoint) if f.default is not MISSING}
#: Rows per multi-row upsert: ~25 columns each stays far below SQLite's 32,766 bound variables.
UPSERT_BATCH = 500


def _point_values(job_id: int, point: Mapping[str, Any], shard: int | None, worker: str | None,
                  param_index: int | None) -> dict[str, Any]:
    """Every column of a point's row: a field the point leaves out takes the point dataclass's default."""
    values = {k: point.get(k, POINT_DEFAULTS.get(k)) for k in POINT_FIELDS}
    values["sparsity"] = round(float(values["sparsity"]), 10)
    values.update(job_id=job_id, shard=shard, worker=worker, param_index=param_index, created_at=utcnow())
    return values


def upsert_point(
    session: Session, job_id: int, point: Mapping[str, Any], *, shard: int | None, worker: str | None,
    param_index: int | None = None,
) -> None:
    """Store one sensitivity point; a redelivered shard overwrites instead of duplicating."""
    values = {k: v for k, v in _point_values(job_id, point, shard, worker, param_index).items()
              if k in point or k not in POINT_FIELDS}
    _upsert(session, SensitivityPointRow.__table__, values, POINT_KEY)


def upsert_points(session: Session, job_id: int, points: Iterable[tuple[Mapping[str, Any], int | None]], *,
                  shard: int | None, worker: str | None) -> int:
    """Store many (point, param_index) pairs with the same idempotent upsert, ``UPSERT_BATCH`` rows per
    statement (an import of 100,000 points is 200 statements, not 100,000). Returns how many were stored."""
    table, count, batch = SensitivityPointRow.__table__, 0, []
    for point, index in points:
        batch.append(_point_values(job_id, point, shard, worker, index))
        if len(batch) == UPSERT_BATCH:
            count += _upsert_many(session, table, batch)
            batch = []
    return count + (_upsert_many(session, table, batch) if batch else 0)


def _upsert_many(session: Session, table: Any, rows: list[dict[str, Any]]) -> int:
    stmt = _insert(session, table).values(rows)
    updates = {k: stmt.excluded[k] for k in rows[0] if k not in POINT_KEY}
    session.execute(stmt.on_conflict_do_update(index_elements=list(POINT_KEY), set_=updates))
    return len(rows)


def upsert_epoch(session: Session, job_id: int, epoch: int, metrics: Mapping[str, Any]) -> None:
    """Store one epoch's metrics; known columns are typed, the rest kept in ``data``."""
    values: dict[str, Any] = {k: _float_or_none(metrics.get(k)) for k in EPOCH_COLUMNS}
    values["data"] = {k: v for k, v in metrics.items() if k not in EPOCH_COLUMNS and _jsonable(v)}
    values.update(job_id=job_id, epoch=epoch, created_at=utcnow())
    _upsert(session, EpochMetric.__table__, values, ("job_id", "epoch"))


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool, list, dict))


def create_job(
    session: Session,
    *,
    kind: str,
    spec: dict[str, Any],
    shards: int = 1,
    experiment_id: int | None = None,
    code_version: str | None = None,
) -> Job:
    """Insert a queued job and its shard rows (commit is the caller's)."""
    job = Job(
        kind=kind, spec=spec, status="queued", shards_total=shards, experiment_id=experiment_id,
        code_version=code_version,
    )
    session.add(job)
    session.flush()
    now = utcnow()
    session.add_all(JobShard(job_id=job.id, index=i, status="queued", dispatched_at=now) for i in range(shards))
    return job


def claim_shard(session: Session, job_id: int, index: int, *, worker: str, stale_s: float) -> bool:
    """Atomically take a shard unless another live worker holds it; True if this worker may run it.

    A shard is free when queued, when its holder's heartbeat is stale, or when this same worker
    holds it (a redelivery to the same process). Finished shards and cancelled jobs are never rerun.
    """
    now = utcnow()
    job = session.get(Job, job_id)
    if job is None or job.status in TERMINAL_STATUSES or job.cancel_requested:
        return False
    stale_before = now - timedelta(seconds=stale_s)
    result = session.execute(
        update(JobShard)
        .where(
            JobShard.job_id == job_id,
            JobShard.index == index,
            or_(
                JobShard.status == "queued",
                and_(
                    JobShard.status == "running",
                    or_(
                        JobShard.heartbeat_at.is_(None),
                        JobShard.heartbeat_at < stale_before,
                        JobShard.worker == worker,
                    ),
                ),
            ),
        )
        .values(
            status="running", worker=worker, heartbeat_at=now, started_at=now,
            attempts=JobShard.attempts + 1,
        )
    )
    if result.rowcount != 1:
        session.rollback()
        return False
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "queued")
        .values(status="running", started_at=now)
    )
    session.execute(update(Job).where(Job.id == job_id).values(worker=worker, heartbeat_at=now))
    session.commit()
    return True


def heartbeat(session: Session, job_id: int, index: int, *, device: str | None = None) -> None:
    now = utcnow()
    shard_values: dict[str, Any] = {"heartbeat_at": now}
    job_values: dict[str, Any] = {"heartbeat_at": now}
    if device:
        shard_values["device"] = device
        job_values["device"] = device
    session.execute(update(JobShard).where(JobShard.job_id == job_id, JobShard.index == index).values(**shard_values))
    session.execute(update(Job).where(Job.id == job_id).values(**job_values))


def is_cancel_requested(session: Session, job_id: int) -> bool:
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def set_progress(session: Session, job_id: int, *, done: int | None = None, total: int | None = None) -> None:
    values: dict[str, Any] = {}
    if done is not None:
        values["progress_done"] = done
    if total is not None:
        values["progress_total"] = total
    if values:
        session.execute(update(Job).where(Job.id == job_id).values(**values))


def merge_result(session: Session, job_id: int, values: Mapping[str, Any]) -> None:
    """Merge keys into the job's result JSON (shards of one job report the same keys, so last write wins)."""
    job = session.get(Job, job_id, with_for_update=True, populate_existing=True)
    if job is not None:
        job.result = {**(job.result or {}), **values}


def count_points(session: Session, job_id: int) -> int:
    return int(session.scalar(select(func.count()).where(SensitivityPointRow.job_id == job_id)) or 0)


def finish_shard(
    session: Session, job_id: int, index: int, *, status: str, error: str | None = None,
    points_total: int | None = None,
) -> str:
    """Close a shard and settle the job: failed if any shard failed, cancelled if asked, succeeded
    when every shard succeeded (for sensitivity: every expected point is then stored). Returns the
    job's status afterwards."""
    now = utcnow()
    values: dict[str, Any] = {"status": status, "finished_at": now, "heartbeat_at": now, "error": error}
    if points_total is not None:
        values["points_total"] = points_total
    session.execute(update(JobShard).where(JobShard.job_id == job_id, JobShard.index == index).values(**values))
    session.flush()
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        session.commit()
        return "deleted"
    shards = session.scalars(select(JobShard).where(JobShard.job_id == job_id)).all()
    states = {s.status for s in shards}
    new_status: str | None = None
    if "failed" in states:
        new_status = "failed"
        job.error = job.error or next(s.error for s in shards if s.status == "failed")
    elif states == {"succeeded"}:
        new_status = "succeeded"
        if job.kind == "sensitivity":
            job.progress_done = count_points(session, job_id)
            job.progress_total = job.progress_done
    elif job.cancel_requested and "running" not in states:
        new_status = "cancelled"
    if new_status and job.status not in TERMINAL_STATUSES:
        job.status = new_status
        job.finished_at = now
        if new_status == "cancelled":
            session.execute(
                update(JobShard).where(JobShard.job_id == job_id, JobShard.status == "queued")
                .values(status="cancelled", finished_at=now)
            )
    session.commit()
    return job.status


def _held(stale_s: float | None) -> Any:
    """A shard a live worker holds: running, and (given ``stale_s``) with a heartbeat younger than that."""
    if stale_s is None:
        return JobShard.status == "running"
    stale_before = utcnow() - timedelta(seconds=stale_s)
    return and_(JobShard.status == "running", JobShard.heartbeat_at.is_not(None),
                JobShard.heartbeat_at >= stale_before)


def live_shards(session: Session, job_id: int, *, stale_s: float | None) -> list[JobShard]:
    """The job's shards that a live worker holds now (``stale_s`` None: every running shard)."""
    return list(session.scalars(
        select(JobShard).where(JobShard.job_id == job_id, _held(stale_s)).order_by(JobShard.index)
    ))


def _end_cancelled(session: Session, job: Job) -> None:
    """Settle a job as cancelled with every unfinished shard (no runner is left to do it)."""
    now = utcnow()
    job.cancel_requested = True
    job.status = "cancelled"
    job.finished_at = now
    session.execute(
        update(JobShard).where(JobShard.job_id == job.id, JobShard.status.in_(ACTIVE_STATUSES))
        .values(status="cancelled", finished_at=now)
    )


def request_cancel(session: Session, job: Job, *, stale_s: float | None = None) -> None:
    """Cooperative cancel: the flag is read by the runner between points. A job no live worker holds
    (queued, or every running shard's heartbeat older than ``stale_s``) has nobody to read the flag,
    so it ends cancelled at once; ``stale_s`` None counts every running shard as held."""
    job.cancel_requested = True
    if job.status == "queued" or not live_shards(session, job.id, stale_s=stale_s):
        _end_cancelled(session, job)
    session.commit()


def end_orphaned_cancels(session: Session, *, stale_s: float, all_active: bool = False) -> list[int]:
    """End as cancelled every cancel-requested active job that no live worker holds (its runner died
    before it read the flag, so nobody else will). ``all_active``: no shard is held by anyone (embedded
    start-up under the data-dir lock), whatever its heartbeat says. Returns the jobs ended."""
    cond = and_(Job.cancel_requested.is_(True), Job.status.in_(ACTIVE_STATUSES))
    if not all_active:
        cond = and_(cond, ~select(JobShard.index).where(JobShard.job_id == Job.id, _held(stale_s)).exists())
    jobs = session.scalars(select(Job).where(cond).order_by(Job.id)).all()
    for job in jobs:
        _end_cancelled(session, job)
    session.commit()
    return [job.id for job in jobs]


def shards_to_redispatch(session: Session, *, stale_s: float, all_active: bool = False) -> list[tuple[int, int]]:
    """(job, shard) pairs whose worker is gone: running with a stale heartbeat, or queued for longer
    than ``stale_s`` (a lost message). ``all_active`` takes every unfinished shard (embedded restart,
    where no other process can be running them)."""
    stale_before = utcnow() - timedelta(seconds=stale_s)
    cond = JobShard.status.in_(ACTIVE_STATUSES)
    if not all_active:
        cond = and_(
            cond,
            or_(
                and_(JobShard.status == "running", or_(JobShard.heartbeat_at.is_(None),
                                                       JobShard.heartbeat_at < stale_before)),
                and_(JobShard.status == "queued", or_(JobShard.dispatched_at.is_(None),
                                                      JobShard.dispatched_at < stale_before)),
            ),
        )
    rows = session.execute(
        select(JobShard.job_id, JobShard.index)
        .join(Job, Job.id == JobShard.job_id)
        .where(cond, Job.cancel_requested.is_(False), Job.status.in_(ACTIVE_STATUSES))
        .order_by(JobShard.job_id, JobShard.index)
    ).all()
    return [(r[0], r[1]) for r in rows]


def mark_dispatched(session: Session, pairs: Iterable[tuple[int, int]], *, release: bool = False) -> None:
    """Stamp the dispatch time; ``release`` also hands running shards back to the queue (their holder is
    known to be gone, e.g. the embedded server that ran them restarted) so the next claim succeeds."""
    now = utcnow()
    values: dict[str, Any] = {"dispatched_at": now}
    if release:
        values.update(status="queued", worker=None)
    for job_id, index in pairs:
        session.execute(
            update(JobShard).where(JobShard.job_id == job_id, JobShard.index == index).values(**values)
        )
    session.commit()


def model_source(session: Session, name: str, data_dir: Path, kind: str | None = None) -> tuple[str, str | None]:
    """(architecture, checkpoint path or None) of a spec's ``model``: a registered model's, else the name
    itself as an architecture with fresh weights. ``kind`` "architecture" (the spec's ``model_kind``) never
    reads the registry."""
    entry = None if kind == "architecture" else session.scalar(select(ModelEntry).where(ModelEntry.name == name))
    if entry is None:
        return name, None
    artifact = session.get(Artifact, entry.artifact_id) if entry.artifact_id is not None else None
    return entry.architecture, str(data_dir / artifact.path) if artifact is not None else None


@dataclass(frozen=True)
class ParameterFacts:
    """A model's parameter shapes (name -> dims, in named_parameters order) and its prunable names, as
    stored in SQL; ``source`` says where they came from, for messages."""

    shapes: dict[str, tuple[int, ...]]
    prunable: list[str]
    source: str


def shapes_json(shapes: Mapping[str, Iterable[int]]) -> list[list[Any]]:
    """The stored form of shapes: ``[[name, [dims...]], ...]`` (JSON keeps a list's order everywhere)."""
    return [[name, [int(d) for d in dims]] for name, dims in shapes.items()]


def _facts(shapes: list[Any] | None, prunable: list[Any] | None, source: str) -> ParameterFacts | None:
    if not shapes or prunable is None:
        return None
    return ParameterFacts({str(n): tuple(int(d) for d in dims) for n, dims in shapes}, [str(n) for n in prunable],
                          source)


def architecture_facts(session: Session, name: str) -> ParameterFacts | None:
    """The published facts of architecture ``name`` (canonical), or None if no worker published them yet."""
    row = session.get(ArchitectureFacts, name)
    return None if row is None else _facts(row.shapes, row.prunable, f"architecture {name!r} ({row.published_by})")


def model_facts(session: Session, name: str) -> ParameterFacts | None:
    """The shapes a registered model stored at registration, or None (not registered, or registered before
    shapes were recorded)."""
    entry = session.scalar(select(ModelEntry).where(ModelEntry.name == name))
    return None if entry is None else _facts(entry.shapes, entry.prunable, f"registered model {name!r}")


def publish_architecture(session: Session, name: str, *, shapes: Mapping[str, Iterable[int]],
                         prunable: Iterable[str], input_shape: Iterable[int], num_classes: int | None,
                         torch_version: str | None, published_by: str) -> None:
    """Record (or refresh) an architecture's facts; idempotent, so every worker may publish at start."""
    values = {"name": name, "shapes": shapes_json(shapes), "prunable": list(prunable),
              "input_shape": [int(d) for d in input_shape], "num_classes": num_classes,
              "torch_version": torch_version, "published_by": published_by, "published_at": utcnow()}
    _upsert(session, ArchitectureFacts.__table__, values, ("name",))


def published_architectures(session: Session) -> dict[str, str | None]:
    """Architecture name -> the torch version its facts were published with."""
    rows = session.execute(select(ArchitectureFacts.name, ArchitectureFacts.torch_version))
    return {name: version for name, version in rows}


# -- what workers can build (worker_capabilities) ------------------------------------------------

def publish_capabilities(session: Session, worker: str, *, fingerprint: str, devices: Iterable[str],
                         torch_version: str | None, timm_version: str | None,
                         architectures: Iterable[Mapping[str, Any]], timm_models: Iterable[str],
                         datasets: Iterable[Mapping[str, Any]] = ()) -> None:
    """Record (or replace) what ``worker`` can build and load, refreshed now; its ``started_at`` is kept on a
    replace."""
    now = utcnow()
    values = {"worker": worker, "fingerprint": fingerprint, "devices": list(devices),
              "torch_version": torch_version, "timm_version": timm_version,
              "architectures": [dict(a) for a in architectures], "timm_models": list(timm_models),
              "datasets": [dict(d) for d in datasets], "started_at": now, "refreshed_at": now, "stopped_at": None}
    stmt = _insert(session, WorkerCapabilities.__table__).values(**values)
    updates = {k: stmt.excluded[k] for k in values if k not in ("worker", "started_at")}
    session.execute(stmt.on_conflict_do_update(index_elements=["worker"], set_=updates))


def refresh_capabilities(session: Session, worker: str) -> bool:
    """Mark ``worker``'s published capabilities as current; False if it has none (publish them again)."""
    result = session.execute(update(WorkerCapabilities).where(WorkerCapabilities.worker == worker,
                                                              WorkerCapabilities.stopped_at.is_(None))
                             .values(refreshed_at=utcnow()))
    return bool(result.rowcount)


def withdraw_capabilities(session: Session, worker: str) -> None:
    """A worker that stops says so at once, rather than staying "live" until its refresh goes stale; the row
    stays (not live) so a successor with the same fingerprint can reuse it."""
    session.execute(update(WorkerCapabilities).where(WorkerCapabilities.worker == worker)
                    .values(stopped_at=utcnow()))


def live_capabilities(session: Session, *, stale_s: float) -> list[WorkerCapabilities]:
    """The capabilities of the workers that refreshed them within ``stale_s`` seconds, by worker name."""
    fresh = WorkerCapabilities.refreshed_at >= utcnow() - timedelta(seconds=stale_s)
    return list(session.scalars(select(WorkerCapabilities).where(fresh, WorkerCapabilities.stopped_at.is_(None))
                                .order_by(WorkerCapabilities.worker)))


def capabilities_by_fingerprint(session: Session, fingerprint: str) -> WorkerCapabilities | None:
    """The latest capabilities published with ``fingerprint`` (same host, versions and entry points), if any."""
    return session.scalar(select(WorkerCapabilities).where(WorkerCapabilities.fingerprint == fingerprint)
                          .order_by(WorkerCapabilities.refreshed_at.desc()).limit(1))


def forget_stale_capabilities(session: Session, *, stale_s: float, keep: str) -> int:
    """Delete the rows of workers gone for ``stale_s`` seconds (``keep`` excepted); returns how many."""
    stale = WorkerCapabilities.refreshed_at < utcnow() - timedelta(seconds=stale_s)
    result = session.execute(delete(WorkerCapabilities).where(stale, WorkerCapabilities.worker != keep))
    return int(result.rowcount or 0)


def workers_publishing(session: Session, name: str, *, stale_s: float) -> list[str]:
    """The live workers that can build architecture ``name`` (a plugin's name or ``timm/<name>``)."""
    return [row.worker for row in live_capabilities(session, stale_s=stale_s)
            if name in row.timm_models or any(a.get("name") == name for a in row.architectures)]


def workers_loading(session: Session, dataset: str, *, stale_s: float) -> list[str]:
    """The live workers that can load dataset ``dataset`` (a ``prunescope.datasets`` plugin's name)."""
    return [row.worker for row in live_capabilities(session, stale_s=stale_s)
            if any(d.get("name") == dataset for d in row.datasets or ())]


def published_models(session: Session, *, stale_s: float) -> dict[str, Any]:
    """What live workers publish beyond the built-in catalogue, as ``GET /api/v1/architectures`` shows it:
    ``architectures`` (plugins, each with the workers that build it), ``timm`` (every name any live worker
    builds) and ``workers`` (each live worker's devices, versions and counts)."""
    plugins: dict[str, dict[str, Any]] = {}
    timm: set[str] = set()
    workers = []
    for row in live_capabilities(session, stale_s=stale_s):
        for arch in row.architectures:
            entry = plugins.setdefault(arch["name"], {**arch, "workers": []})
            entry["workers"].append(row.worker)
        timm.update(row.timm_models)
        workers.append({"worker": row.worker, "devices": list(row.devices), "torch_version": row.torch_version,
                        "timm_version": row.timm_version, "architectures": [a["name"] for a in row.architectures],
                        "timm_models": len(row.timm_models), "refreshed_at": as_utc(row.refreshed_at).isoformat()})
    return {"architectures": [plugins[n] for n in sorted(plugins)], "timm": sorted(timm), "workers": workers}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def store_artifact(
    session: Session,
    data_dir: Path,
    *,
    kind: str,
    name: str,
    source: Path | BinaryIO | bytes,
    job_id: int | None = None,
) -> Artifact:
    """Copy a file under ``data_dir/artifacts`` and record its sha256 and size in SQL."""
    artifact = Artifact(job_id=job_id, kind=kind, name=name, path="", sha256="", size=0)
    session.add(artifact)
    session.flush()
    rel = Path("artifacts") / f"{artifact.id:08d}-{Path(name).name}"
    dest = data_dir / rel
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, bytes):
            dest.write_bytes(source)
        elif isinstance(source, Path):
            shutil.copyfile(source, dest)
        else:
            with open(dest, "wb") as out:
                shutil.copyfileobj(source, out)
    except OSError as exc:
        # A full or read-only disk: leave no half-written file behind and say which artifact failed where.
        with contextlib.suppress(OSError):
            dest.unlink(missing_ok=True)
        raise ArtifactWriteError(f"cannot write {kind} artifact {name!r} under {dest.parent}: "
                                 f"{exc.strerror or exc}") from exc
    artifact.path = str(rel)
    artifact.sha256 = sha256_file(dest)
    artifact.size = dest.stat().st_size
    return artifact


def delete_job(session: Session, job: Job, data_dir: Path) -> None:
    """Remove a job with its points, epochs, shards and artifact files."""
    kept = set(session.scalars(select(ModelEntry.artifact_id).where(ModelEntry.artifact_id.is_not(None))))
    for art in session.scalars(select(Artifact).where(Artifact.job_id == job.id)).all():
        if art.id in kept:  # a registered model still needs its checkpoint
            art.job_id = None
            continue
        (data_dir / art.path).unlink(missing_ok=True)
        session.delete(art)
    session.execute(update(ModelEntry).where(ModelEntry.source_job_id == job.id).values(source_job_id=None))
    for table in (SensitivityPointRow, EpochMetric, JobShard):
        session.execute(delete(table).where(table.job_id == job.id))
    session.delete(job)
    session.commit()


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; treat them as the UTC they were stored as."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


# ----------------------------------------------------------------------------------------------
# The jobs list: filters, search, sort and paging in SQL (both stores), and each job's key numbers
# ----------------------------------------------------------------------------------------------

#: What ``GET /jobs?sort=`` takes (a leading ``-`` sorts descending): name -> column or JSON field.
JOB_SORTS: dict[str, Any] = {
    "id": Job.id,
    "kind": Job.kind,
    "status": Job.status,
    "model": Job.spec["model"].as_string(),
    "dataset": Job.spec["dataset"].as_string(),
    "name": Job.result["name"].as_string(),
    "experiment": Job.experiment_id,
    "created": Job.created_at,
    "started": Job.started_at,
    "finished": Job.finished_at,
}
#: Newest first: the order the list always had.
DEFAULT_JOB_SORT = "-id"
#: The labels a user gives a job (``PATCH /jobs/{id}``) are keys of its result JSON beside the runner's.
LABEL_KEYS = ("name", "tags")


def job_search(text: str) -> Any:
    """One case-insensitive substring over what a person recognises a job by: its id (``12`` or ``#12``),
    kind, status, model, dataset, name, tags and experiment name."""
    needle = text.strip().lower()
    fields = (Job.kind, Job.status, Job.spec["model"].as_string(), Job.spec["dataset"].as_string(),
              Job.result["name"].as_string(), cast(Job.result["tags"], String))
    terms = [func.lower(f).contains(needle, autoescape=True) for f in fields]
    terms.append(Job.experiment_id.in_(
        select(Experiment.id).where(func.lower(Experiment.name).contains(needle, autoescape=True))))
    digits = needle.removeprefix("#")
    if digits.isdigit() and len(digits) < 19:
        terms.append(Job.id == int(digits))
    return or_(*terms)


def _job_conditions(status: str | None, kind: str | None, experiment: int | None, search: str | None) -> list[Any]:
    """The WHERE of a jobs list: equality filters and the search (see :func:`job_search`)."""
    conds = [column == value for column, value in ((Job.status, status), (Job.kind, kind),
                                                   (Job.experiment_id, experiment)) if value is not None]
    if search and search.strip():
        conds.append(job_search(search))
    return conds


def _job_order(sort: str) -> list[Any]:
    """The ORDER BY of ``sort`` (a key of :data:`JOB_SORTS`, ``-`` for descending); ValueError if unknown."""
    name = sort.removeprefix("-")
    if name not in JOB_SORTS:
        raise ValueError(f"unknown sort {sort!r}; one of {', '.join(JOB_SORTS)} (a leading - sorts descending)")
    column = JOB_SORTS[name]
    order = [(column.desc() if sort.startswith("-") else column.asc()).nulls_last()]
    if name != "id":
        order.append(Job.id.desc())
    return order


def _job_total(session: Session, conds: list[Any]) -> int:
    return int(session.scalar(select(func.count()).select_from(Job).where(*conds)) or 0)


def list_jobs(session: Session, *, status: str | None = None, kind: str | None = None,
              experiment: int | None = None, search: str | None = None, sort: str = DEFAULT_JOB_SORT,
              limit: int = 50, offset: int = 0) -> tuple[list[Job], int]:
    """One page of jobs and the total the filters match. ``sort`` is a key of :data:`JOB_SORTS`, ``-`` for
    descending; ties (and empty values, always last) fall back to newest first, so pages never overlap."""
    order = _job_order(sort)
    conds = _job_conditions(status, kind, experiment, search)
    rows = session.scalars(select(Job).where(*conds).order_by(*order).limit(limit).offset(offset)).all()
    return list(rows), _job_total(session, conds)


def _stored(name: str) -> Any:
    """A job column as stored, undecoded: JSON as its text, the rest as the driver hands it over."""
    column = getattr(Job, name)
    return (cast(column, Text) if isinstance(column.type, JSON) else type_coerce(column, NullType())).label(name)


@functools.lru_cache(maxsize=256)
def _stored_page_query(fields: tuple[str, ...], status: str | None, kind: str | None, experiment: int | None,
                       search: str | None, sort: str, limit: int, offset: int) -> Any:
    """The page of stored rows, each ending with the total; built once per distinct list (building a
    SELECT costs more than running it)."""
    conds = _job_conditions(status, kind, experiment, search)
    total = select(func.count()).select_from(Job).where(*conds).scalar_subquery().label("total")
    return select(*(_stored(n) for n in fields), total).where(*conds).order_by(*_job_order(sort)) \
        .limit(limit).offset(offset)


#: Built once: the count of changes the jobs list would show (:class:`~api.store.models.StoreChanges`); also
#: what :mod:`api.store.changes` sends on its own connections, as SQL text.
CHANGES = select(StoreChanges.n).where(StoreChanges.id == 1)


def store_changes(conn: Session | Connection) -> int:
    """How many writes the jobs list would show the store has seen: equal counts, equal pages."""
    return int(conn.execute(CHANGES).scalar_one())


def stored_job_page(session: Session, fields: tuple[str, ...], *, status: str | None = None, kind: str | None = None,
                    experiment: int | None = None, search: str | None = None, sort: str = DEFAULT_JOB_SORT,
                    limit: int = 50, offset: int = 0) -> tuple[list[tuple], int, dict[int, float]]:
    """:func:`list_jobs` as stored: the page's rows of the columns ``fields`` names (which must include id
    and kind) as plain tuples, left undecoded so that an unchanged page is recognised by comparing them
    (decode with :func:`decode_job_rows`), the total, and the sensitivity jobs' baselines. At most two
    statements whatever the page size (the total rides on the page; a third one past the end)."""
    conn = session.connection()  # Core: plain rows, none of the ORM's per-statement work
    rows = [tuple(r) for r in conn.execute(_stored_page_query(fields, status, kind, experiment, search, sort,
                                                              limit, offset))]
    total = rows[0][-1] if rows else _job_total(session, _job_conditions(status, kind, experiment, search))
    id_at, kind_at = fields.index("id"), fields.index("kind")
    baselines = _baselines(conn, [r[id_at] for r in rows if r[kind_at] == "sensitivity"])
    return [r[:-1] for r in rows], int(total or 0), baselines


@functools.lru_cache(maxsize=8)
def _decoders(fields: tuple[str, ...], dialect: Dialect) -> list[Any]:
    """Per column what the ORM would do to a stored value (JSON text -> json.loads; otherwise the column
    type's own result processor on this dialect, e.g. SQLite's text times and 0/1 flags)."""
    out = []
    for name in fields:
        kind = getattr(Job, name).type
        out.append(json.loads if isinstance(kind, JSON) else kind.dialect_impl(dialect).result_processor(dialect, None))
    return out


def decode_job_rows(session: Session, fields: tuple[str, ...], rows: list[tuple],
                    baselines: dict[int, float]) -> list[dict[str, Any]]:
    """Stored rows of :func:`stored_job_page` as the ORM reads them (times in UTC), each with its
    ``numbers`` (:func:`job_numbers`'s)."""
    decoders = _decoders(fields, session.get_bind().dialect)
    out = []
    for raw in rows:
        row = {}
        for name, decode, value in zip(fields, decoders, raw, strict=True):
            value = decode(value) if decode is not None and value is not None else value
            row[name] = as_utc(value) if isinstance(value, datetime) else value
        row["numbers"] = _numbers(row["kind"], row.get("result"), baselines.get(row["id"]))
        out.append(row)
    return out


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


#: Built once: the ids are one expanding parameter.
_BASELINES = (select(SensitivityPointRow.job_id, func.max(SensitivityPointRow.top1))
              .where(SensitivityPointRow.job_id.in_(bindparam("ids", expanding=True)),
                     SensitivityPointRow.sparsity == 0)
              .group_by(SensitivityPointRow.job_id))


def _baselines(session: Session | Connection, sensitivity_ids: list[int]) -> dict[int, float]:
    """Each sensitivity job's unpruned top1 (its points at sparsity 0), in one query."""
    if not sensitivity_ids:
        return {}
    rows = session.execute(_BASELINES, {"ids": sensitivity_ids})
    return {job_id: top1 for job_id, top1 in rows if top1 is not None}


def _numbers(kind: str, result: Any, baseline: float | None) -> dict[str, float | None]:
    """One job's list numbers from its kind, result JSON and (sensitivity) baseline."""
    result = result if isinstance(result, dict) else {}
    before = result.get("baseline") if isinstance(result.get("baseline"), dict) else {}
    final = result.get("final") if isinstance(result.get("final"), dict) else {}
    return {
        "baseline_top1": baseline if kind == "sensitivity" else _number(before.get("top1")),
        "final_top1": _number(final.get("top1")),
        "final_sparsity": _number(result.get("sparsity")),
    }


def job_numbers(session: Session, jobs: Iterable[Job]) -> dict[int, dict[str, float | None]]:
    """Per job the numbers the list shows: ``baseline_top1`` (a sensitivity job's unpruned top1, its
    points at sparsity 0; a prune job's top1 before pruning), ``final_top1`` and ``final_sparsity``
    (what a prune or train job ended with). One query for all the page's sensitivity jobs."""
    jobs = list(jobs)
    baselines = _baselines(session, [j.id for j in jobs if j.kind == "sensitivity"])
    return {job.id: _numbers(job.kind, job.result, baselines.get(job.id)) for job in jobs}


def set_labels(session: Session, job_id: int, labels: Mapping[str, Any]) -> Job | None:
    """Merge a job's name and tags into its result JSON, locked as :func:`merge_result` is (a runner may be
    merging its own keys); ``None`` removes one. Commit is the caller's."""
    job = session.get(Job, job_id, with_for_update=True, populate_existing=True)
    if job is None:
        return None
    result = dict(job.result or {})
    for key in LABEL_KEYS:
        if key in labels:
            if labels[key] is None:
                result.pop(key, None)
            else:
                result[key] = labels[key]
    job.result = result
    return job


def point_rows(session: Session, job_id: int, parameter: str | None = None, after_id: int = 0, *,
               position: bool = False) -> list[dict]:
    """Plain rows (Core, no ORM objects): a result can hold tens of thousands of points. ``position``: each
    row also says its parameter's place in the model (the event stream's points arrive in shard order, and
    the dashboard keeps model order with it)."""
    cols = [SensitivityPointRow.id, *(getattr(SensitivityPointRow, f) for f in POINT_FIELDS)]
    if position:
        cols.append(SensitivityPointRow.param_index.label("position"))
    query = select(*cols).where(SensitivityPointRow.job_id == job_id, SensitivityPointRow.id > after_id)
    if parameter is not None:
        query = query.where(SensitivityPointRow.parameter == parameter)
    query = query.order_by(*POINT_ORDER)
    return [dict(r._mapping) for r in session.execute(query)]
