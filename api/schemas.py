"""Request and response models of REST v1 (the job specs themselves are :mod:`api.shared.specs`);
validation here must never import torch."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from api.shared.specs import (  # noqa: F401 - the specs are part of REST v1's schemas
    DATA_FIELDS,
    SPECS,
    Name,
    OptionValue,
    PlanGoal,
    PlanSpec,
    PruneSpec,
    RegistryName,
    SensitivitySpec,
    TrainSpec,
    _Strict,
    check_options,
    field_default,
)
from pruning_core.limits import (
    MAX_OPTION_CHARS,
    MAX_OPTIONS,
    LimitError,
    quote,
)
from pruning_core.names import DATASET_NAMES, canonical_model_name
from pruning_core.plan import OBJECTIVES
from pruning_core.schedule import YAML_MAX_BYTES


def _utc(value: datetime) -> datetime:
    """Stored times are UTC; SQLite hands them back naive, and RFC 3339 needs the offset."""
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]


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


class PlanJobCreate(_JobCreateBase):
    kind: Literal["plan"]
    spec: PlanSpec


JobCreate = Annotated[TrainJobCreate | SensitivityJobCreate | PruneJobCreate | PlanJobCreate,
                      Field(discriminator="kind")]
#: The spec model of each job kind: what the API validates with, the client and CLI build and the runners read.


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
    root: str | None = Field(default=None, max_length=MAX_OPTION_CHARS)
    options: dict[str, OptionValue] = Field(default_factory=dict, max_length=MAX_OPTIONS,
                                            description="the kind's declared options, checked as a job's are")

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        if value not in DATASET_NAMES:
            raise ValueError(f"unknown dataset kind {quote(value)}; known: {', '.join(DATASET_NAMES)}")
        return value

    @model_validator(mode="after")
    def _options(self) -> DatasetCreate:
        if "root" in self.options:  # the root field is the one checked against the dataset roots
            raise LimitError("give the directory as the root field, not as an option", field="options.root")
        check_options(self.kind, self.options, "options")
        return self


class DatasetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    name: str
    kind: str
    root: str | None
    options: dict[str, Any]
    builtin: bool = False
    task: str = "classification"  # what its samples are for (classification, language-model)
    published_by: list[str] | None = None  # a plugin dataset's live workers (prunescope.datasets entry points)


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
    yaml: str = Field(min_length=1, max_length=YAML_MAX_BYTES)


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
    warnings: list[str] = Field(default_factory=list,
                                description="what was accepted but is worth a look (a key given twice with the "
                                            "same value, with both lines)")


class PlanRequest(PlanGoal):
    """A plan of a finished sweep: the optimiser's (``objective`` with ``budget`` or ``target``, answered with
    the baselines it beats, predicted only) or the equal-tolerance rule's (``max_drop`` or ``target_sparsity``).
    A plan job (kind ``plan``) measures the optimiser's plan."""

    sensitivity_job: int = Field(ge=1)
    max_drop: float | None = Field(default=None, gt=0, le=1e9, allow_inf_nan=False,
                                   description="the rule's tolerated damage per layer in the metric's units: its "
                                               "drop where higher is better (top1, in points), its rise where "
                                               "lower is (loss, perplexity)")
    target_sparsity: float | None = Field(default=None, gt=0, lt=1, description="instead of max_drop: the "
                                          "overall weight sparsity the rule reaches with the least damage")

    @model_validator(mode="after")
    def _one_goal(self) -> PlanRequest:
        self.check_request()
        return self

    def check_request(self) -> None:
        """ValueError unless exactly one goal is stated (the rule's or the optimiser's), consistently."""
        rule = (self.max_drop is not None) + (self.target_sparsity is not None)
        if self.objective is None and rule != 1:
            raise ValueError("max_drop: give exactly one of max_drop and target_sparsity (or an objective with "
                             "budget or target)")
        if self.objective is not None and rule:
            raise ValueError("objective: an objective takes budget or target, not max_drop or target_sparsity")
        self.check_goal()


class PlanMeasure(PlanGoal):
    """A plan job for a finished sweep: the optimiser's plan measured as a whole (and corrected), beside the
    baselines; its model and data are the sweep's. The fields are PlanSpec's (its defaults and bounds)."""

    sensitivity_job: int = PlanSpec.model_fields["sensitivity_job"]
    objective: Literal[OBJECTIVES] = PlanSpec.model_fields["objective"]  # type: ignore[valid-type]
    correct: bool = PlanSpec.model_fields["correct"]
    rounds: int = PlanSpec.model_fields["rounds"]
    search: bool = PlanSpec.model_fields["search"]
    evaluations: int = PlanSpec.model_fields["evaluations"]
    baselines: bool = PlanSpec.model_fields["baselines"]
    experiment_id: int | None = Field(default=None, ge=1)


class PlanLaunch(PlanRequest):
    """A plan and the prune job that runs it: the prune fields are PruneSpec's (its defaults and bounds)."""

    plan_job: int | None = Field(default=None, ge=1, description="instead of a goal: prune with this succeeded plan "
                                 "job's measured (and corrected) schedule")
    lr: float = PruneSpec.model_fields["lr"]
    thin: bool = PruneSpec.model_fields["thin"]
    register_as: RegistryName | None = PruneSpec.model_fields["register_as"]
    experiment_id: int | None = Field(default=None, ge=1)

    def check_request(self) -> None:
        if self.plan_job is None:
            super().check_request()
        elif any(v is not None for v in (self.objective, self.max_drop, self.target_sparsity, self.budget,
                                         self.target)):
            raise ValueError("plan_job: give a plan job or a goal (max_drop, target_sparsity, objective), not both")


def known_architecture(name: str) -> str | None:
    """The catalogue's canonical name for an architecture or alias, or None: the one check every route
    (jobs, plans, model registration) uses, so they accept exactly what ``pruning_core`` builds."""
    return canonical_model_name(name)
