"""All configuration in one place: environment variables ``PRUNESCOPE_*``; the defaults give the embedded mode."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from api.logs import FORMATS as LOG_FORMATS
from pruning_core.limits import DEFAULT_LIMITS, Limits


class Settings(BaseSettings):
    """Service settings. ``database_url`` defaults to a SQLite file under ``data_dir``."""

    model_config = SettingsConfigDict(env_prefix="PRUNESCOPE_", extra="ignore")

    data_dir: Path = Path("./prunescope-data")
    database_url: str = ""
    broker_url: str = ""
    token: str = ""
    # os.pathsep-separated directories; dataset roots given by users must resolve under one of them.
    dataset_roots: str = ""
    max_upload_mb: float = Field(default=200.0, gt=0)
    # Any body that is not a multipart upload (JSON specs, schedules): parsed in memory on the event
    # loop, so it gets a far smaller bound than checkpoint uploads (a schedule may be 1 MB of YAML).
    max_json_mb: float = Field(default=4.0, gt=0)
    # What an uploaded checkpoint may *declare* (uncompressed archive size, one tensor storage):
    # checked before anything is read, so zip bombs and huge tensors are refused cheaply.
    max_checkpoint_mb: float = Field(default=4096.0, gt=0)
    max_tensor_mb: float = Field(default=2048.0, gt=0)
    # The bounded pool of helper processes (api.compute) that checks schedules, previews, plans and scans
    # uploads: how many run at once, how many calls may wait (beyond: an immediate 503; keep it well below
    # the 40 request threads), and one computation's time and resident-memory budget (beyond: killed, 503).
    compute_workers: int = Field(default=1, ge=1, le=64)
    compute_queue: int = Field(default=16, ge=0, le=32)
    compute_timeout_s: float = Field(default=60.0, gt=0)
    compute_memory_mb: float = Field(default=2048.0, gt=0)
    # Comma-separated origins allowed to call the API from a browser; empty (the default) sends no
    # CORS headers at all, so other sites' pages cannot read responses.
    cors_origins: str = ""
    # A running shard whose heartbeat is older than this is presumed dead and re-dispatched.
    heartbeat_stale_s: float = Field(default=60.0, gt=0)
    # Redis redelivers unacknowledged tasks after this; keep it well above one shard's duration.
    visibility_timeout_s: int = Field(default=6 * 3600, gt=0)
    # Celery queue name; separate deployments (or test runs) sharing one Redis use different queues.
    queue: str = Field(default="prunescope", min_length=1, max_length=100)
    sensitivity_shards: int = Field(default=4, ge=1, le=256)
    # torch intra-op threads per job process; 0 = half the usable cores (shared machines oversubscribe fast).
    torch_threads: int = Field(default=0, ge=0, le=1024)
    # The embedded server's sensitivity shards run side by side in this many child processes (unset: one per
    # usable core); 0 runs them in the server's job thread like other kinds, with no process start and torch
    # import per shard (the test suite's setting, but for the tests of the child processes).
    shard_processes: int | None = Field(default=None, ge=0, le=1024)
    # What one request may describe (issue 13), checked when a spec is validated, before anything is
    # built; the defaults live in pruning_core.limits.Limits, which the library applies on its own.
    max_levels: int = Field(default=DEFAULT_LIMITS.max_levels, ge=1, le=1_000_000)
    min_level_step: float = Field(default=DEFAULT_LIMITS.min_level_step, gt=0, lt=1)
    max_levels_chars: int = Field(default=DEFAULT_LIMITS.max_levels_chars, ge=16, le=10_000_000)
    max_dataset_n: int = Field(default=DEFAULT_LIMITS.max_dataset_n, ge=1)
    max_classes: int = Field(default=DEFAULT_LIMITS.max_classes, ge=2)
    max_sample_elements: int = Field(default=DEFAULT_LIMITS.max_sample_elements, ge=1)
    max_dataset_mb: float = Field(default=DEFAULT_LIMITS.max_dataset_mb, gt=0)
    max_image_size: int = Field(default=DEFAULT_LIMITS.max_image_size, ge=1)
    # Issue 18. Every job that ends is exported to this MLflow tracking URI (empty: none), into the
    # experiment named below, by whoever ran it (failures are logged, never fail the job).
    mlflow_tracking_uri: str = ""
    mlflow_experiment: str = "prunescope"
    # Where that experiment keeps its files when prunescope creates it (empty: MLflow's default, which for a
    # local store is ./mlruns in the working directory).
    mlflow_artifact_location: str = ""
    # The address users reach this service at, for the tags that link an exported run back to its job.
    public_url: str = ""
    # Log records as text lines for people (``text``) or one JSON object a line (``json``), serve and worker.
    log_format: Literal[LOG_FORMATS] = "text"  # type: ignore[valid-type]
    log_level: str = "INFO"

    @field_validator("token")
    @classmethod
    def _token_not_blank(cls, value: str) -> str:
        """An all-whitespace token would "protect" a public bind with a secret anyone can guess."""
        if value and not value.strip():
            raise ValueError("PRUNESCOPE_TOKEN is blank (only whitespace): set a real secret, or unset it")
        if value != value.strip():
            raise ValueError("PRUNESCOPE_TOKEN starts or ends with whitespace: remove it (clients send it trimmed)")
        return value

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def db_url(self) -> str:
        """The SQLAlchemy URL actually used (the SQLite default lives in the data dir)."""
        return self.database_url or f"sqlite:///{self.data_dir / 'prunescope.db'}"

    @property
    def roots(self) -> list[Path]:
        """Configured dataset roots, resolved; the data dir's ``datasets`` folder is always one."""
        extra = [Path(p).expanduser().resolve() for p in self.dataset_roots.split(os.pathsep) if p.strip()]
        return [self.data_dir / "datasets", *extra]

    @property
    def cors_allow_list(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]

    @property
    def max_json_bytes(self) -> int:
        return int(self.max_json_mb * 1024 * 1024)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def limits(self) -> Limits:
        """The request limits above as the library's ``Limits`` (what the validators and runners apply)."""
        return Limits(**{name: getattr(self, name) for name in Limits.__dataclass_fields__})

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings read once from the environment (tests build their own)."""
    return Settings()
