"""The job specs: one set of pydantic models that the API validates requests with, the client and the CLI
build, and the runners read (``SPECS[kind].model_validate(job.spec)``). Their defaults live here only.

Torch-free and FastAPI-free: the worker imports this module, the web app's schemas extend it. Every bound a
spec checks comes from ``pruning_core.limits`` (the request's, see :mod:`api.shared.limits`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from api.shared.limits import current_limits
from pruning_core.dataset_options import DATASETS, check_dataset_options
from pruning_core.groups import SENSITIVITY_GROUPS
from pruning_core.levels import DEFAULT_LEVELS, check_level_count, parse_levels
from pruning_core.limits import (
    MAX_GLOB_CHARS,
    MAX_OPTIONS,
    MAX_PARAMS,
    MAX_SEED,
    SWEEP_MEMORY_MB,
    LimitError,
    quote,
)
from pruning_core.names import MODEL_NAME_PATTERN, canonical_model_name
from pruning_core.plan import OBJECTIVES
from pruning_core.plan.compare import Goal
from pruning_core.points import METRIC_NAME_PATTERN, higher_is_better
from pruning_core.schedule import YAML_MAX_BYTES

Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")]
ModelName = Annotated[str, Field(min_length=1, max_length=200, pattern=MODEL_NAME_PATTERN)]
OptionValue = str | int | float | bool


class _Strict(BaseModel):
    """Unknown fields are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid")


def check_options(dataset: str, options: dict[str, OptionValue], container: str) -> None:
    """``options`` against what ``dataset`` declares (its kind's types and ranges) and the request's
    limits; the error names ``<container>.<option>``. Counting only: nothing is built. An unknown
    name may be a registered dataset: each option is then checked against the built-in kind that
    declares it, and the route checks them again against the registered kind."""
    limits = current_limits()
    problems: list[LimitError] = []
    for key, value in options.items():  # each option alone, so the answer lists every bad one
        kind = dataset if dataset in DATASETS else \
            next((d.name for d in DATASETS.values() if any(o.name == key for o in d.options)), None)
        try:
            if kind is None:
                known = ", ".join(sorted({o.name for d in DATASETS.values() for o in d.options}))
                raise LimitError(f"{quote(key)} is not an option of any dataset kind; options: {known}", field=key)
            check_dataset_options(kind, {key: value}, limits)
        except LimitError as exc:
            problems.append(exc)
    if not problems and dataset in DATASETS:  # the options together (a budget such as n x shape)
        try:
            check_dataset_options(dataset, options, limits)
        except LimitError as exc:
            problems.append(exc)
    if len(problems) == 1:
        exc = problems[0]
        raise LimitError(str(exc), field=f"{container}.{exc.field}" if exc.field else container)
    if problems:
        raise LimitError(f"{len(problems)} bad options: " + "; ".join(
            f"{exc.field}: {exc}" if exc.field else str(exc) for exc in problems), field=container)


#: What a spec's ``model`` names: an architecture (fresh weights) or a registered model (its checkpoint).
MODEL_KINDS = ("architecture", "registered")


def check_registry_name(name: str) -> str:
    """A registered model's name never shadows an architecture: an architecture name or alias is refused
    (``digits-cnn`` must always mean the architecture's fresh weights)."""
    canonical = canonical_model_name(name)
    if canonical is not None:
        said = repr(canonical) if canonical == name else f"{canonical!r} (alias {name!r})"
        raise ValueError(f"{name!r} is the name of the architecture {said}: a registered model needs a name of its "
                         f"own (e.g. {canonical}-trained), so that {name!r} keeps meaning the architecture")
    return name


#: A model registry name: a plain name that is not an architecture's (see :func:`check_registry_name`).
RegistryName = Annotated[Name, AfterValidator(check_registry_name)]


class _DataSpec(_Strict):
    model: ModelName = Field(description="architecture name (timm/<name> for timm's) or a registered model's name")
    model_kind: Literal[MODEL_KINDS] | None = Field(  # type: ignore[valid-type]
        default=None, description="what `model` names: an architecture (fresh weights) or a registered model "
                                  "(its checkpoint); left out, the service decides at submit and stores it")
    dataset: Name = Field(description="a built-in dataset name or a registered dataset's name")
    dataset_options: dict[str, OptionValue] = Field(
        default_factory=dict, max_length=MAX_OPTIONS,
        description="the dataset kind's declared options, e.g. {\"n\": 1000} for synthetic")
    batch_size: int = Field(default=256, ge=1, le=65536)
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @model_validator(mode="after")
    def _options(self) -> _DataSpec:
        check_options(self.dataset, self.dataset_options, "dataset_options")
        return self


#: The spec fields every kind shares (model, data, device): what a plan's prune job takes over from its sweep.
DATA_FIELDS = frozenset(_DataSpec.model_fields)


class _FitSpec(_DataSpec):
    """What train and prune share with ``prunescope train/prune``: the optimizer and its seed."""

    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    momentum: float = Field(default=0.9, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(default=1e-4, ge=0, le=1)
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="seeds the weights' shuffle order and any randomness")
    register_as: RegistryName | None = Field(default=None, description="model registry name for the result; "
                                                                       "never an architecture's name or alias")


#: The learning rate of an adaptive optimizer (adam, adamw) when none is given; sgd takes the field's default.
ADAPTIVE_LR = 1e-3


class TrainSpec(_FitSpec):
    epochs: int = Field(default=15, ge=1, le=10000)
    lr: float = Field(default=0.1, gt=0, le=10, description="learning rate; when not given, 0.1 for sgd and "
                                                             "1e-3 for adam and adamw")

    @classmethod
    def default_lr(cls, optimizer: str) -> float:
        """The learning rate training starts from when the spec names none: sgd's is the field's default."""
        return cls.model_fields["lr"].default if optimizer == "sgd" else ADAPTIVE_LR

    @model_validator(mode="after")
    def _optimizer_lr(self) -> TrainSpec:
        if "lr" not in self.model_fields_set:
            self.lr = self.default_lr(self.optimizer)
        return self


class SensitivitySpec(_DataSpec):
    split: Literal["train", "test"] = "test"
    group: Literal[SENSITIVITY_GROUPS] = Field(  # type: ignore[valid-type]
        default="element", description="element, or whole filters or input channels (pruning_core.groups)")
    levels: str | list[float] = Field(
        default=DEFAULT_LEVELS, validate_default=True,
        description="start:stop:step (stop excluded) or a list; stored as the list of levels. At most "
                    "PRUNESCOPE_MAX_LEVELS levels (1000) and a step of at least PRUNESCOPE_MIN_LEVEL_STEP (1e-4)")
    params: list[Annotated[str, Field(min_length=1, max_length=MAX_GLOB_CHARS)]] | None = Field(
        default=None, max_length=MAX_PARAMS, description="parameter names or globs; all conv/linear weights if absent"
    )
    samples: int | None = Field(default=None, ge=1, description="a seeded subset of this many samples; at most "
                                                                 "PRUNESCOPE_MAX_DATASET_N (1,000,000)")
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="seed of the samples subset")
    early_stop: float | None = Field(
        default=None, ge=0, le=100,
        description="top1 floor (%): once a parameter falls below it, its higher levels are recorded unmeasured",
    )
    amp: bool = Field(default=False, description="mixed precision; points are flagged approximate")
    adaptive_tolerance: float | None = Field(
        default=None, ge=0, le=100,
        description="adaptive evaluation (top1 points): samples in a seeded random order, a point stops once its "
                    "top1 drop, scored against the baseline on the same samples, is known (at adaptive_confidence) "
                    "to lie within or beyond this tolerance; those points record the samples they used and are "
                    "flagged approximate")
    adaptive_confidence: float = Field(default=0.95, gt=0, lt=1,
                                       description="adaptive: the confidence that a stopped point is on the right "
                                                   "side of the tolerance (spent over every look)")
    coupled: bool = False
    latency: bool = Field(default=False, description="structured groups: time each point's thinned model (ms)")
    engine: Literal["fast", "plain"] = "fast"
    memory_mb: float = Field(default=SWEEP_MEMORY_MB, ge=16, le=4_000_000,
                             description="memory the sweep may hold (MB): half for the evaluation data (decoded "
                                         "images as uint8, decoded once per sweep when they fit), half for the "
                                         "values cached at the cut")
    shards: int | None = Field(default=None, ge=1, le=256, description="parallel pieces (groups of layers)")

    @field_validator("levels", mode="before")
    @classmethod
    def _level_count(cls, value: Any) -> Any:
        """A list is counted before pydantic converts its items (a text is measured by parse_levels)."""
        if isinstance(value, list):
            check_level_count(len(value), current_limits())
        return value

    @field_validator("params", mode="before")
    @classmethod
    def _param_count(cls, value: Any) -> Any:
        """Counted before each item is checked, so a million-item list costs no more than a long one."""
        if isinstance(value, list) and len(value) > MAX_PARAMS:
            raise ValueError(f"{len(value)} parameter names or globs is more than the limit of {MAX_PARAMS}; "
                             "use globs such as layer1.*.weight")
        return value

    @field_validator("levels")
    @classmethod
    def _levels(cls, value: str | list[float]) -> list[float]:
        return parse_levels(value, current_limits())

    @field_validator("samples")
    @classmethod
    def _samples(cls, value: int | None) -> int | None:
        limit = current_limits().max_dataset_n
        if value is not None and value > limit:
            raise ValueError(f"{value:.4g} samples is more than the limit of {limit} (max_dataset_n)")
        return value

    @model_validator(mode="after")
    def _structured_only(self) -> SensitivitySpec:
        for flag in ("coupled", "latency"):
            if getattr(self, flag) and self.group == "element":
                raise ValueError(f"{flag} applies to structured groups (filter, channel), not element")
        return self


class PruneSpec(_FitSpec):
    schedule: str = Field(min_length=1, max_length=YAML_MAX_BYTES, description="Distiller YAML schedule text")
    epochs: int = Field(default=10, ge=1, le=10000)
    lr: float = Field(default=0.01, gt=0, le=10)
    start_epoch: int = Field(default=0, ge=0, le=10000, description="replay the schedule's first epochs untrained")
    thin: bool = Field(default=False, description="thin the pruned model and measure size and latency")
    latency_batch: int = Field(default=1, ge=1, le=4096, description="batch size of the thin latency measurement")


class PlanGoal(_Strict):
    """What a plan optimises and its bound (:func:`pruning_core.plan.optimise`): the fields POST /plans and a
    plan job share, with the schedule it is written as."""

    objective: Literal[OBJECTIVES] | None = Field(  # type: ignore[valid-type]
        default=None, description="optimise: sparsity (weights removed), macs (MACs removed, structured groups) "
                                  "or latency (ms saved, points with latency), with budget or target; absent: "
                                  "the equal-tolerance rule (max_drop or target_sparsity)")
    budget: float | None = Field(default=None, gt=0, le=1e9, allow_inf_nan=False,
                                 description="the summed predicted damage allowed: per-layer drops of the metric "
                                             "added up (top1 points, or loss rise)")
    target: float | None = Field(default=None, gt=0, lt=1, description="instead of budget: the fraction of the "
                                 "objective to remove (weights, MACs or latency) with the least predicted damage")
    interpolate: int = Field(default=0, ge=0, le=9, description="levels interpolated inside each measured gap")
    metric: str = Field(default="top1", pattern=METRIC_NAME_PATTERN,
                        description="any metric the job's points have (top1, top5, loss, perplexity, a custom one)")
    higher_is_better: bool | None = Field(default=None, description="the metric's direction: known for top1, top5, "
                                          "loss and perplexity; needed for a custom metric")
    epochs: int = Field(default=10, ge=1, le=10000, description="epochs of the schedule (AGP needs 3)")
    one_shot: bool = Field(default=False, description="prune everything at epoch 0, then fine-tune")

    def goal(self) -> Goal:
        """The optimiser's goal these fields state (the sparsity objective where none is named)."""
        return Goal(objective=self.objective or "sparsity", budget=self.budget, target=self.target,
                    metric=self.metric, higher_is_better=self.higher_is_better, interpolate=self.interpolate)

    def check_goal(self) -> None:
        """ValueError (naming the field) unless the goal and the schedule are complete and consistent."""
        if self.objective is not None and (self.budget is None) == (self.target is None):
            raise ValueError("budget: with an objective give exactly one of budget and target")
        if self.objective is None and (self.budget is not None or self.target is not None):
            raise ValueError("objective: budget and target need an objective (sparsity, macs or latency)")
        if not self.one_shot and self.epochs < 3:
            raise ValueError("epochs: an AGP schedule needs at least 3 epochs (or one_shot)")
        try:
            higher_is_better(self.metric, self.higher_is_better)
        except ValueError as exc:
            raise ValueError(f"higher_is_better: {exc}") from None


class PlanSpec(_DataSpec, PlanGoal):
    """A plan job: the optimiser's plan for a finished sweep, measured as a whole on the sweep's model and data
    (every chosen layer pruned at once, one evaluation), beside the baselines at the same goal; with
    ``correct``, re-solved with a scaled budget until the measured drop meets it. Its model and data fields
    are the sweep's (the API copies them)."""

    sensitivity_job: int = Field(ge=1, description="the finished sensitivity job whose points are planned")
    objective: Literal[OBJECTIVES] = "sparsity"  # type: ignore[valid-type]
    correct: bool = Field(default=False, description="with budget: re-solve with a scaled budget until the "
                                                     "measured drop meets the budget")
    rounds: int = Field(default=4, ge=1, le=10, description="at most this many measured rounds when correcting")
    search: bool = Field(default=False, description="with target: improve the plan by measured exchanges that keep "
                                                    "the target (pruning_core.plan.search), on the sweep's data, "
                                                    "starting from the best-measured of it and the baselines")
    evaluations: int = Field(default=300, ge=1, le=5000, description="at most this many whole-plan evaluations "
                                                                     "when searching")
    baselines: bool = Field(default=True, description="also measure uniform, equal-tolerance and global "
                                                      "(magnitude, or Torch-Pruning's ranking) at the same goal")
    split: Literal["train", "test"] = SensitivitySpec.model_fields["split"]
    samples: int | None = SensitivitySpec.model_fields["samples"]
    seed: int = SensitivitySpec.model_fields["seed"]
    coupled: bool = SensitivitySpec.model_fields["coupled"]

    @model_validator(mode="after")
    def _goal(self) -> PlanSpec:
        self.check_goal()
        if self.correct and self.budget is None:
            raise ValueError("correct: the correction loop meets a budget: give budget, not target")
        if self.search and self.target is None:
            raise ValueError("search: the measured search keeps a target: give target, not budget")
        return self


#: What a plan job takes over from its sweep's spec besides the model and data (DATA_FIELDS): the fields it
#: shares with SensitivitySpec (split, samples, seed, coupled), so it evaluates as the sweep did.
PLAN_SWEEP_FIELDS = (frozenset(PlanSpec.model_fields) & frozenset(SensitivitySpec.model_fields)) - DATA_FIELDS

#: The spec model of each job kind: what the API validates with, the client and CLI build and the runners read.
SPECS: dict[str, type[_DataSpec]] = {"train": TrainSpec, "sensitivity": SensitivitySpec, "prune": PruneSpec,
                                     "plan": PlanSpec}


def field_default(spec: type[BaseModel], name: str) -> Any:
    """The value ``spec`` gives field ``name`` when a request leaves it out (the one place defaults live)."""
    return spec.model_fields[name].get_default(call_default_factory=True)
