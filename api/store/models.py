"""The schema: SQLAlchemy 2 declarative models shared by the API and the worker (no FastAPI, no torch)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Double,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from pruning_core.points import POINT_FIELDS  # noqa: F401  (torch-free; the store's name for a point's fields)

JOB_KINDS = ("train", "sensitivity", "prune", "plan")
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE_STATUSES = ("queued", "running")
TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")


#: Row ids and the foreign keys that hold them: 64-bit everywhere (BIGINT on PostgreSQL; on SQLite an
#: INTEGER PRIMARY KEY is the 64-bit rowid already, and must stay INTEGER to remain the rowid).
Id = BigInteger().with_variant(Integer, "sqlite")
#: SQLite's AUTOINCREMENT: a deleted job's id is never handed out again (PostgreSQL sequences never reuse).
NO_REUSE = {"sqlite_autoincrement": True}


def utcnow() -> datetime:
    """Timezone-aware now; stored as UTC so SQLite and PostgreSQL agree."""
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, float: Double}


class Experiment(Base):
    __tablename__ = "experiments"
    __table_args__ = NO_REUSE
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Artifact(Base):
    """A file under the data dir (checkpoint, schedule, report); SQL keeps its hash and size."""

    __tablename__ = "artifacts"
    __table_args__ = NO_REUSE
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    job_id: Mapped[int | None] = mapped_column(Id, ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(Text)  # relative to the data dir
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ModelEntry(Base):
    """The model registry: a named architecture + checkpoint with its size and baseline metrics."""

    __tablename__ = "models"
    __table_args__ = NO_REUSE
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    architecture: Mapped[str] = mapped_column(String(100))
    artifact_id: Mapped[int | None] = mapped_column(Id, ForeignKey("artifacts.id", ondelete="SET NULL"))
    checkpoint_sha256: Mapped[str | None] = mapped_column(String(64))
    parameters: Mapped[int | None] = mapped_column(BigInteger)
    macs: Mapped[float | None] = mapped_column(Double)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    source_job_id: Mapped[int | None] = mapped_column(Id, ForeignKey("jobs.id", ondelete="SET NULL"))
    # uploaded checkpoints are validated by a worker before use: pending | valid | invalid
    validation: Mapped[str] = mapped_column(String(16), default="valid")
    validation_error: Mapped[str | None] = mapped_column(Text)
    # ``[[name, [dims...]], ...]`` in named_parameters order, and the names globs match: written by whoever
    # had the model (a worker registering it, the API's torch-free upload scan), so previews and plans
    # need no torch. None for models registered before they were recorded.
    shapes: Mapped[list[Any] | None] = mapped_column(JSON)
    prunable: Mapped[list[Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ArchitectureFacts(Base):
    """What building an architecture tells (needs torch): its parameter shapes and prunable names, published
    by workers at start and by runners that build it, so the torch-free API can preview and plan on it."""

    __tablename__ = "architecture_facts"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)  # the catalogue's canonical name
    shapes: Mapped[list[Any]] = mapped_column(JSON)  # [[name, [dims...]], ...] in named_parameters order
    prunable: Mapped[list[Any]] = mapped_column(JSON)
    input_shape: Mapped[list[Any]] = mapped_column(JSON)
    num_classes: Mapped[int | None] = mapped_column(Integer)
    torch_version: Mapped[str | None] = mapped_column(String(64))
    published_by: Mapped[str | None] = mapped_column(String(255))
    published_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WorkerCapabilities(Base):
    """What one worker process can build, published by it at start and refreshed periodically: its devices,
    torch/timm versions, plugin architectures (``[{name, source, input_shape, num_classes}]``), timm names
    (as jobs spell them, ``timm/<name>``) and plugin datasets (``[{name, task}]``). Live while ``refreshed_at``
    is younger than the heartbeat bound."""

    __tablename__ = "worker_capabilities"
    worker: Mapped[str] = mapped_column(String(255), primary_key=True)
    # host, versions and entry points hashed: an embedded server reuses a dead predecessor's row by it
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    devices: Mapped[list[Any]] = mapped_column(JSON)  # ["cpu", "cuda:0", ...]
    torch_version: Mapped[str | None] = mapped_column(String(64))
    timm_version: Mapped[str | None] = mapped_column(String(64))
    architectures: Mapped[list[Any]] = mapped_column(JSON)
    timm_models: Mapped[list[Any]] = mapped_column(JSON)
    datasets: Mapped[list[Any]] = mapped_column(JSON, server_default="[]")  # plugin datasets: [{name, task}]
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    refreshed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    # set when the worker stops: not live any more, but kept a day as its fingerprint's capabilities
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DatasetEntry(Base):
    __tablename__ = "datasets"
    __table_args__ = NO_REUSE
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    root: Mapped[str | None] = mapped_column(Text)
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = NO_REUSE
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    experiment_id: Mapped[int | None] = mapped_column(
        Id, ForeignKey("experiments.id", ondelete="SET NULL"), index=True
    )
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(255))
    device: Mapped[str | None] = mapped_column(String(64))
    code_version: Mapped[str | None] = mapped_column(String(64))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    shards_total: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # What the runner reports beyond points/epochs: skipped parameters, final metrics (JSON, merged per shard).
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class StoreChanges(Base):
    """One row whose ``n`` the database raises on every write the jobs list would show (migration 0009's
    triggers: jobs, experiments, points at sparsity 0), so a cached page is checked by reading one number."""

    __tablename__ = "store_changes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    n: Mapped[int] = mapped_column(BigInteger)


class JobShard(Base):
    """One unit of dispatch: a group of parameters of a sensitivity job (other kinds have one shard)."""

    __tablename__ = "job_shards"
    job_id: Mapped[int] = mapped_column(Id, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    worker: Mapped[str | None] = mapped_column(String(255))
    device: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    points_total: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class SensitivityPointRow(Base):
    """Every field of the engine's SensitivityPoint, unique per (job, parameter, sparsity)."""

    __tablename__ = "sensitivity_points"
    __table_args__ = (UniqueConstraint("job_id", "parameter", "sparsity", name="uq_point"), NO_REUSE)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    job_id: Mapped[int] = mapped_column(Id, ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    parameter: Mapped[str] = mapped_column(String(255))
    sparsity: Mapped[float] = mapped_column(Double)
    # null after an early stop (measured false): the level was not evaluated
    top1: Mapped[float | None] = mapped_column(Double)
    top5: Mapped[float | None] = mapped_column(Double)
    loss: Mapped[float | None] = mapped_column(Double)
    samples: Mapped[int | None] = mapped_column(Integer)
    nnz: Mapped[int | None] = mapped_column(BigInteger)
    top1_low: Mapped[float | None] = mapped_column(Double)
    top1_high: Mapped[float | None] = mapped_column(Double)
    top5_low: Mapped[float | None] = mapped_column(Double)
    top5_high: Mapped[float | None] = mapped_column(Double)
    macs: Mapped[float | None] = mapped_column(Double)
    params_left: Mapped[int | None] = mapped_column(BigInteger)
    measured: Mapped[bool] = mapped_column(Boolean, default=True)
    approximate: Mapped[bool] = mapped_column(Boolean, default=False)
    subset: Mapped[bool] = mapped_column(Boolean, default=False)
    group: Mapped[str] = mapped_column(String(16), default="element")
    mode: Mapped[str] = mapped_column(String(16), default="independent")
    latency_ms: Mapped[float | None] = mapped_column(Double)  # latency=True only: the thinned model's forward
    # the task's metrics beyond top1/top5/loss ({"perplexity": 41.2}, a custom metric's {"mae": 0.8}); SQL NULL
    # where there are none (classification), not JSON null, so both stores read it back as None
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    # the parameter's position in the model (named_parameters order), so shards merge back into the model's order
    param_index: Mapped[int | None] = mapped_column(Integer)
    shard: Mapped[int | None] = mapped_column(Integer)
    worker: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# POINT_FIELDS (imported above) are the columns a point fills; tests/core/test_points.py keeps the row's
# columns equal to them, type for type.
# Points are read in the model's parameter order (named_parameters), then sparsity; rows without a
# position (none are written so today) come last, by name, on SQLite and PostgreSQL alike.
POINT_ORDER = (
    SensitivityPointRow.param_index.asc().nulls_last(), SensitivityPointRow.parameter, SensitivityPointRow.sparsity,
)


class EpochMetric(Base):
    """One epoch of a train or prune job; ``data`` keeps whatever else the engine reported."""

    __tablename__ = "epoch_metrics"
    __table_args__ = (UniqueConstraint("job_id", "epoch", name="uq_epoch"), NO_REUSE)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    job_id: Mapped[int] = mapped_column(Id, ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    train_loss: Mapped[float | None] = mapped_column(Double)
    top1: Mapped[float | None] = mapped_column(Double)
    top5: Mapped[float | None] = mapped_column(Double)
    loss: Mapped[float | None] = mapped_column(Double)
    lr: Mapped[float | None] = mapped_column(Double)
    sparsity: Mapped[float | None] = mapped_column(Double)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
