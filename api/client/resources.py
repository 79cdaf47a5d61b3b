"""Typed views of the API's JSON: one frozen-ish dataclass per resource, built by ``from_json``.

Unknown keys are ignored so an older client keeps working against a newer server; timestamps
become timezone-aware datetimes (SQLite gives naive ones, stored as UTC).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

    from api.client.core import Client

R = TypeVar("R", bound="_Resource")
TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")


def _when(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return value
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@dataclass
class _Resource:
    @classmethod
    def from_json(cls: type[R], data: dict[str, Any], **extra: Any) -> R:
        """Build from a response body, keeping only the fields this client knows."""
        values = {}
        for f in fields(cls):
            if f.name in data:
                value = data[f.name]
                values[f.name] = _when(value) if f.name.endswith("_at") else value
        return cls(**values, **extra)


@dataclass
class Job(_Resource):
    """A job as ``GET /jobs/{id}`` reports it; the helper methods go through the client that made it."""

    id: int
    kind: str
    status: str
    spec: dict[str, Any] = field(default_factory=dict)
    experiment_id: int | None = None
    progress_done: int = 0
    progress_total: int = 0
    error: str | None = None
    result: dict[str, Any] | None = None  # what the job produced: a plan job's plan, final metrics, lineage
    worker: str | None = None
    device: str | None = None
    code_version: str | None = None
    cancel_requested: bool = False
    shards_total: int = 1
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None
    shards: list[dict[str, Any]] = field(default_factory=list)
    client: Client | None = field(default=None, repr=False, compare=False)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def _owner(self) -> Client:
        if self.client is None:
            raise RuntimeError(f"job {self.id} was built without a client; use client.wait(job) etc.")
        return self.client

    def refresh(self) -> Job:
        return self._owner().job(self.id)

    def wait(self, **kwargs: Any) -> Job:
        """See :meth:`Client.wait`."""
        return self._owner().wait(self, **kwargs)

    def points(self, parameter: str | None = None) -> pd.DataFrame:
        return self._owner().points(self, parameter)

    def plot(self, metric: str = "top1", **kwargs: Any) -> go.Figure:
        return self._owner().plot(self, metric, **kwargs)

    def epochs(self) -> pd.DataFrame:
        return self._owner().epochs(self)

    def artifacts(self) -> list[Artifact]:
        return self._owner().artifacts(self)

    def model(self) -> Model:
        return self._owner().job_model(self)

    def cancel(self) -> Job:
        return self._owner().cancel(self)


@dataclass
class Model(_Resource):
    """A registered model: architecture, checkpoint artifact, size and the metrics its job measured."""

    id: int
    name: str
    architecture: str
    artifact_id: int | None = None
    checkpoint_sha256: str | None = None
    parameters: int | None = None
    macs: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    source_job_id: int | None = None
    validation: str = "valid"
    created_at: datetime | None = None


@dataclass
class Artifact(_Resource):
    id: int
    kind: str
    name: str
    sha256: str
    size: int
    job_id: int | None = None
    created_at: datetime | None = None


@dataclass
class Dataset(_Resource):
    name: str
    kind: str
    root: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    builtin: bool = False


@dataclass
class Experiment(_Resource):
    id: int
    name: str
    description: str = ""
    tags: list[str] = field(default_factory=list)
    jobs: int = 0
    created_at: datetime | None = None


@dataclass
class ScheduleCheck(_Resource):
    """``valid`` False is an answer, not an exception: ``error``, ``key`` and ``line`` say what is wrong."""

    valid: bool
    error: str | None = None
    key: str | None = None
    line: int | None = None
    schedule: dict[str, Any] | None = None


@dataclass
class Event:
    """One server-sent event: ``progress``, ``point`` or ``end`` (``/jobs/{id}/events``); ``job``, ``deleted``
    or ``end`` (``/jobs/events``)."""

    event: str
    data: dict[str, Any]
