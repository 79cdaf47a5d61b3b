"""Request and response models of REST v1; validation here must never import torch."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from pruning_core.levels import parse_levels
from pruning_core.names import DATASET_NAMES, canonical_model_name

Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")]
OptionValue = str | int | float | bool


def _utc(value: datetime) -> datetime:
    """Stored times are UTC; SQLite hands them back naive, and RFC 3339 needs the offset."""
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]


class _Strict(BaseModel):
    """Unknown fields are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid")


class _DataSpec(_Strict):
    model: Name = Field(description="architecture name or a registered model's name")
    dataset: Name = Field(description="a built-in dataset name or a registered dataset's name")
    dataset_options: dict[str, OptionValue] = Field(default_factory=dict)
    batch_size: int = Field(default=256, ge=1, le=65536)
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @field_validator("dataset_options")
    @classmethod
    def _options(cls, value: dict[str, OptionValue]) -> dict[str, OptionValue]:
        for key, item in value.items():
            if not key.isidentifier():
                raise ValueError(f"option name {key!r} is not an identifier")
            if key in ("n", "classes", "size", "seed") and (
                isinstance(item, bool) or not isinstance(item, int) or item < (0 if key == "seed" else 1)
            ):
                raise ValueError(f"option {key}={item!r} must be a positive integer")
        return value


#: The spec fields every kind shares (model, data, device): what a plan's prune job takes over from its sweep.
DATA_FIELDS = frozenset(_DataSpec.model_fields)


class _FitSpec(_DataSpec):
    """What train and prune share with ``prunescope train/prune``: the optimizer and its seed."""

    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    momentum: float = Field(default=0.9, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(default=1e-4, ge=0, le=1)
    seed: int = Field(default=0, ge=0, description="seeds the weights' shuffle order and any randomness")
    register_as: Name | None = Field(default=None, description="model registry name for the result")


class TrainSpec(_FitSpec):
    epochs: int = Field(default=15, ge=1, le=10000)
    lr: float = Field(default=0.1, gt=0, le=10)


class SensitivitySpec(_DataSpec):
    split: Literal["train", "test"] = "test"
    group: Literal["element", "filter", "channel"] = "element"
    levels: str | list[float] = Field(default="0:0.95:0.05", description="start:stop:step or a list")
    params: list[Annotated[str, Field(min_length=1, max_length=300)]] | None = Field(
        default=None, max_length=10000, description="parameter names or globs; all conv/linear weights if absent"
    )
    samples: int | None = Field(default=None, ge=1)
    seed: int = Field(default=0, ge=0, description="seed of the samples subset")
    early_stop: float | None = Field(
        default=None, ge=0, le=100,
        description="top1 floor (%): once a parameter falls below it, its higher levels are recorded unmeasured",
    )
    amp: bool = Field(default=False, description="mixed precision; points are flagged approximate")
    coupled: bool = False
    latency: bool = Field(default=False, description="structured groups: time each point's thinned model (ms)")
    engine: Literal["fast", "plain"] = "fast"
    shards: int | None = Field(default=None, ge=1, le=256, description="parallel pieces (groups of layers)")

    @field_validator("levels")
    @classmethod
    def _levels(cls, value: str | list[float]) -> list[float]:
        return parse_levels(value)

    @model_validator(mode="after")
    def _structured_only(self) -> SensitivitySpec:
        for flag in ("coupled", "latency"):
            if getattr(self, flag) and self.group == "element":
                raise ValueError(f"{flag} applies to structured groups (filter, channel), not element")
        return self


class PruneSpec(_FitSpec):
    schedule: str = Field(min_length=1, max_length=1_000_000, description="Distiller YAML schedule text")
    epochs: int = Field(default=10, ge=1, le=10000)
    lr: float = Field(default=0.01, gt=0, le=10)
    start_epoch: int = Field(default=0, ge=0, le=10000, description="replay the schedule's first epochs untrained")
    thin: bool = False
    latency_batch: int = Field(default=1, ge=1, le=4096, description="batch size of the thin latency measurement")


class _JobCreateBase(_Strict):
    experiment_id: int | None = Field(default=None, ge=1)


class TrainJobCreate(_JobCreateBase):
    kind: Literal["train"]
    spec: TrainSpec


class SensitivityJobCreate(_JobCreateBase):
    kind: Literal["sensitivity"]
    spec: SensitivitySpec


class PruneJobCreate(_JobCreateBase):
    kind: Literal["prune"]
    spec: PruneSpec


JobCreate = Annotated[TrainJobCreate | SensitivityJobCreate | PruneJobCreate, Field(discriminator="kind")]


class ShardOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    index: int
    status: str
    worker: str | None
    device: str | None
    attempts: int
    heartbeat_at: UtcDatetime | None


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    kind: str
    experiment_id: int | None
    spec: dict[str, Any]
    status: str
    progress_done: int
    progress_total: int
    error: str | None
    worker: str | None
    device: str | None
    code_version: str | None
    cancel_requested: bool
    shards_total: int
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    heartbeat_at: UtcDatetime | None
    result: dict[str, Any] | None = None  # skipped parameters (sensitivity), final metrics (train, prune)


class JobDetail(JobOut):
    shards: list[ShardOut] = []


class Page(BaseModel):
    items: list[Any]
    total: int
    limit: int
    offset: int


class EpochOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    epoch: int
    train_loss: float | None
    top1: float | None
    top5: float | None
    loss: float | None
    lr: float | None
    sparsity: float | None
    data: dict[str, Any]


class ArtifactOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    job_id: int | None
    kind: str
    name: str
    sha256: str
    size: int
    created_at: UtcDatetime


class ModelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    architecture: str
    artifact_id: int | None
    checkpoint_sha256: str | None
    parameters: int | None
    macs: float | None
    metrics: dict[str, Any]
    source_job_id: int | None
    validation: str
    created_at: UtcDatetime


class DatasetCreate(_Strict):
    name: Name
    kind: str = Field(description="one of the built-in dataset kinds")
    root: str | None = Field(default=None, max_length=4096)
    options: dict[str, OptionValue] = Field(default_factory=dict)

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        if value not in DATASET_NAMES:
            raise ValueError(f"unknown dataset kind {value!r}; known: {', '.join(DATASET_NAMES)}")
        return value


class DatasetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    name: str
    kind: str
    root: str | None
    options: dict[str, Any]
    builtin: bool = False


class ExperimentCreate(_Strict):
    name: Name
    description: str = Field(default="", max_length=100_000)
    tags: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(default_factory=list, max_length=100)


class ExperimentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    description: str
    tags: list[str]
    created_at: UtcDatetime
    jobs: int = 0


class ScheduleCheck(_Strict):
    yaml: str = Field(min_length=1, max_length=1_000_000)


class SchedulePreviewRequest(ScheduleCheck):
    model: Name = Field(description="architecture name or a registered model's name: the schedule's weights resolve "
                                    "against its parameters")
    epochs: int | None = Field(default=None, ge=1, le=10_000,
                               description="epochs to walk (default: the whole schedule)")
    lr: float = Field(default=0.1, gt=0, le=100, description="the initial learning rate the lr schedulers start from")


class SchedulePreview(BaseModel):
    renames: list[list[str]] = Field(description="(name in the schedule, model parameter) pairs where a "
                                                 "DataParallel prefix was removed")
    epochs: list[dict[str, Any]] = Field(description="per epoch: lr, target sparsity per parameter, acting pruners, "
                                                     "regularizers, thinning events, notes")


class ScheduleResult(BaseModel):
    valid: bool
    error: str | None = None
    key: str | None = None
    line: int | None = None
    schedule: dict[str, Any] | None = None


class PlanRequest(_Strict):
    sensitivity_job: int = Field(ge=1)
    max_drop: float | None = Field(default=None, gt=0, le=100,
                                   description="tolerated top1 drop (points) or loss rise")
    target_sparsity: float | None = Field(default=None, gt=0, lt=1, description="instead of max_drop: the "
                                          "overall weight sparsity to reach with the least damage")
    metric: Literal["top1", "loss"] = "top1"
    epochs: int = Field(default=10, ge=1, le=10000, description="epochs of the schedule (AGP needs 3)")
    one_shot: bool = Field(default=False, description="prune everything at epoch 0, then fine-tune")

    @model_validator(mode="after")
    def _one_goal(self) -> PlanRequest:
        if (self.max_drop is None) == (self.target_sparsity is None):
            raise ValueError("max_drop: give exactly one of max_drop and target_sparsity")
        if not self.one_shot and self.epochs < 3:
            raise ValueError("epochs: an AGP schedule needs at least 3 epochs (or one_shot)")
        return self


class PlanLaunch(PlanRequest):
    lr: float = Field(default=0.01, gt=0, le=10)
    thin: bool = Field(default=False, description="thin the pruned model and measure size and latency")
    register_as: Name | None = None
    experiment_id: int | None = Field(default=None, ge=1)


def known_architecture(name: str) -> str | None:
    """The canonical architecture name, or None (kept here so routes do not import names directly)."""
    return canonical_model_name(name)
