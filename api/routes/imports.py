"""Imports: a sensitivity analysis that ran elsewhere (a notebook, Distiller) becomes a finished job.

``POST /jobs/import`` takes JSON points (any :class:`pruning_core.points.SensitivityPoint` fields: top1/top5
where the task has them, a language model's ``metrics: {"perplexity": ...}``, a custom metric's values),
``POST /jobs/import/csv`` Distiller's CSV (``parameter,sparsity,top1,top5,loss``) as a multipart upload.
Both are bounded (:data:`MAX_IMPORT_POINTS`, the levels limit, each field's length and range), nothing is
run, and a bad row is a 422 naming the row and the field, so the imported job is compared, planned and
shown like any other. The job itself is made by :func:`api.jobs.import_job`. Torch-free: the CSV is read
here with :data:`pruning_core.points.CSV_HEADER`, not with ``pruning_core.sensitivity_io`` (which imports torch).
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import json
from typing import Annotated, Any, Literal, get_type_hints

from fastapi import APIRouter, Body, File, Form, HTTPException, UploadFile
from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    StringConstraints,
    ValidationError,
    create_model,
    field_validator,
)

from api.deps import SessionDep
from api.jobs import bad, import_job
from api.schemas import JobOut
from api.shared.limits import current_limits
from api.shared.specs import _DataSpec, _Strict
from api.store.models import Job
from pruning_core.groups import SENSITIVITY_GROUPS
from pruning_core.levels import check_level_count
from pruning_core.limits import MAX_MESSAGE_CHARS, clip, quote
from pruning_core.points import CSV_HEADER, METRIC_NAME_PATTERN, POINT_FIELDS, SensitivityPoint

router = APIRouter(prefix="/jobs", tags=["imports"])  # job-creating, but not /jobs/{id} operations

#: Points one import may carry, JSON or CSV (a 20-level sweep of every weight of a ViT-B is about 1,000).
MAX_IMPORT_POINTS = 100_000
#: The longest parameter name a point may have (the store's column width).
MAX_PARAMETER_CHARS = 255
_PERCENT = {"ge": 0, "le": 100, "allow_inf_nan": False}
_COUNT = {"ge": 0, "le": 2**63 - 1}
# The bounds of each point field (the fields themselves are SensitivityPoint's, defined once there).
_BOUNDS: dict[str, dict[str, Any]] = {
    "parameter": {"min_length": 1, "max_length": MAX_PARAMETER_CHARS},
    "sparsity": {"ge": 0, "le": 1, "allow_inf_nan": False},
    "top1": _PERCENT, "top5": _PERCENT, "top1_low": _PERCENT, "top1_high": _PERCENT,
    "top5_low": _PERCENT, "top5_high": _PERCENT,
    "loss": {"allow_inf_nan": False},
    "samples": {"ge": 0, "le": 2**31 - 1}, "nnz": {"ge": -1, "le": 2**63 - 1},
    "macs": _COUNT, "params_left": _COUNT, "latency_ms": {"ge": 0, "allow_inf_nan": False},
}
#: Metrics beyond top1/top5/loss one point may carry (a task's perplexity, a few custom metrics).
MAX_POINT_METRICS = 16


def _metric_key(name: str) -> str:
    """A ``metrics`` key names a metric of its own: a point field (``top1``, ``sparsity``) would be read twice."""
    if name in POINT_FIELDS:
        raise ValueError(f"{name!r} is a point field: give it as the field, not as a key of metrics")
    return name


MetricName = Annotated[str, StringConstraints(pattern=METRIC_NAME_PATTERN), AfterValidator(_metric_key)]
#: ``metrics``: finite values by metric name, at most MAX_POINT_METRICS of them.
Metrics = Annotated[dict[MetricName, Annotated[float, Field(allow_inf_nan=False)]],
                    Field(max_length=MAX_POINT_METRICS)]
# Where an import differs from the engine's dataclass: what a notebook or a CSV may not know is None,
# and a point without a group takes the job's.
_OVERRIDES: dict[str, tuple[Any, Any]] = {
    "metrics": (Metrics | None, None),
    "top1": (float | None, None), "top5": (float | None, None), "loss": (float | None, None),
    "samples": (int | None, None), "nnz": (int | None, None),
    "group": (Literal[SENSITIVITY_GROUPS] | None, None),  # type: ignore[valid-type]
    "mode": (Literal["independent", "coupled"], "independent"),
}


def _point_model() -> type[BaseModel]:
    """``ImportedPoint``: every SensitivityPoint field with its bounds; unknown fields are errors."""
    hints = get_type_hints(SensitivityPoint)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(SensitivityPoint):
        annotation, default = hints[f.name], (... if f.default is dataclasses.MISSING else f.default)
        annotation, default = _OVERRIDES.get(f.name, (annotation, default))
        fields[f.name] = (annotation, Field(default, **_BOUNDS.get(f.name, {})))
    return create_model("ImportedPoint", __base__=_Strict, **fields)


ImportedPoint = _point_model()


class SkippedIn(_Strict):
    """A parameter the analysis could not measure, and why (shown by ``GET /jobs/{id}/skipped``)."""

    parameter: str = Field(min_length=1, max_length=MAX_PARAMETER_CHARS)
    reason: str = Field(default="", max_length=MAX_MESSAGE_CHARS)


def _count(value: Any, what: str) -> Any:
    """Counted before any item is checked, so a million-item list costs no more than a short one."""
    if isinstance(value, list) and len(value) > MAX_IMPORT_POINTS:
        raise ValueError(f"{len(value):,} {what} is more than the limit of {MAX_IMPORT_POINTS:,} per import; "
                         "split the analysis into several imports")
    return value


class ImportRequest(_DataSpec):
    """The model, data and points of an analysis run elsewhere. ``model``, ``dataset`` (and its options,
    batch size, device) are what a plan launched from the job prunes with: name a model the server knows
    (an architecture or a registered model) to launch plans; any name is accepted for comparing."""

    experiment_id: int | None = Field(default=None, ge=1)
    group: Literal[SENSITIVITY_GROUPS] | None = Field(  # type: ignore[valid-type]
        default=None, description="the points' structure group; default: the points' own, else element")
    points: list[ImportedPoint] = Field(  # type: ignore[valid-type]
        min_length=1, description=f"at most {MAX_IMPORT_POINTS:,} points, each unique per (parameter, sparsity)")
    skipped: list[SkippedIn] = Field(default_factory=list, description="parameters the analysis did not measure")

    @field_validator("points", mode="before")
    @classmethod
    def _point_count(cls, value: Any) -> Any:
        return _count(value, "points")

    @field_validator("skipped", mode="before")
    @classmethod
    def _skipped_count(cls, value: Any) -> Any:
        return _count(value, "skipped parameters")


def check_rows(points: list[dict[str, Any]], group: str | None, where: list[str]) -> str:
    """The job's group; every point gets it. A row of another group, a repeated (parameter, sparsity)
    or more distinct sparsities than the levels limit is a 422 naming the row (``where[i]``)."""
    job_group = group or next((p["group"] for p in points if p.get("group")), None) or "element"
    seen: dict[tuple[str, float], int] = {}
    for i, point in enumerate(points):
        if point.get("group") not in (None, job_group):
            raise bad(f"{where[i]}.group", f"{point['group']!r} differs from the import's group {job_group!r}; "
                                           "import each group as its own job")
        point["group"] = job_group
        key = (point["parameter"], round(float(point["sparsity"]), 10))
        if key in seen:
            raise bad(f"{where[i]}.sparsity", f"{quote(key[0])} at sparsity {key[1]:g} is given twice "
                                              f"(also {where[seen[key]]}); each (parameter, sparsity) once")
        seen[key] = i
    try:
        check_level_count(len({k[1] for k in seen}), current_limits())
    except ValueError as exc:
        raise bad("points.sparsity", f"distinct sparsities: {exc}") from None
    return job_group


def _line_count(fh: Any) -> int:
    """The lines of an uploaded file (its newlines, plus an unterminated last line), rewound after."""
    count, last = 0, b"\n"
    fh.seek(0)
    while chunk := fh.read(1 << 20):
        count, last = count + chunk.count(b"\n"), chunk[-1:]
    fh.seek(0)
    return count + (last != b"\n")


def read_points_csv(lines: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """Distiller's CSV rows as point dicts (empty metric cells unknown and unmeasured) and each row's name
    for messages (``row 3 (line 4)``); the header must hold CSV_HEADER, other columns are errors."""
    reader = csv.reader(lines)
    try:
        header = [c.strip() for c in next(reader, [])]
        missing = [c for c in CSV_HEADER if c not in header]
        extra = [c for c in header if c not in CSV_HEADER]
        if missing or extra or len(set(header)) != len(header):
            raise bad("csv (line 1)", f"the header must be {','.join(CSV_HEADER)} (Distiller's); missing: "
                                      f"{', '.join(missing) or 'none'}; unknown or repeated: "
                                      f"{clip(', '.join(extra)) or 'none'}")
        rows: list[dict[str, Any]] = []
        where: list[str] = []
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue
            if len(rows) >= MAX_IMPORT_POINTS:
                raise bad("csv", f"more than {MAX_IMPORT_POINTS:,} rows: the limit of points per import; "
                                 "split the file into several imports")
            name = f"csv row {len(rows) + 1} (line {reader.line_num})"
            if len(cells) != len(header):
                raise bad(name, f"{len(cells)} cells where the header has {len(header)}")
            row: dict[str, Any] = {k: (v.strip() or None) for k, v in zip(header, cells, strict=True)}
            # measured where any metric is known (a language model's: its loss alone); spelled out, it is per row
            row["measured"] = row["top1"] is not None or row["top5"] is not None or row["loss"] is not None
            rows.append(row)
            where.append(name)
    except csv.Error as exc:
        raise bad(f"csv (line {reader.line_num})", f"not a readable CSV: {exc}") from None
    except UnicodeDecodeError as exc:
        raise bad("csv", f"not UTF-8 text ({exc.reason} at byte {exc.start}); save the file as UTF-8") from None
    if not rows:
        raise bad("csv", "no rows after the header: nothing to import")
    return rows, where


def _validated(rows: list[dict[str, Any]], where: list[str]) -> list[dict[str, Any]]:
    """Each CSV row through ImportedPoint (the JSON route's bounds); the first bad one is a 422 naming it."""
    out = []
    for i, row in enumerate(rows):
        try:
            out.append(ImportedPoint.model_validate(row).model_dump())
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(p) for p in error.get("loc", ())) or "row"
            raise bad(f"{where[i]}.{field}", f"{clip(str(error.get('msg')), MAX_MESSAGE_CHARS)} "
                                             f"(got {quote(error.get('input'))})") from None
    return out


@router.post("/import", status_code=201, response_model=JobOut)
def import_json(body: Annotated[ImportRequest, Body()], session: SessionDep) -> Job:
    """A finished sensitivity job from JSON points: compared, planned and shown like a measured one
    (its spec says ``imported: true``). A bad point is a 422 naming ``points.<row>.<field>``."""
    points = [p.model_dump() for p in body.points]
    group = check_rows(points, body.group, [f"points.{i}" for i in range(len(points))])
    return import_job(session, body, points, group, source="json",
                      skipped=[s.model_dump() for s in body.skipped])


@router.post("/import/csv", status_code=201, response_model=JobOut)
def import_csv(
    session: SessionDep,
    csv_file: Annotated[UploadFile, File(alias="csv", description="Distiller's parameter,sparsity,top1,top5,loss")],
    model: Annotated[str, Form()],
    dataset: Annotated[str, Form()],
    dataset_options: Annotated[str | None, Form(max_length=65536, description="a JSON object")] = None,
    group: Annotated[str | None, Form()] = None,
    experiment_id: Annotated[int | None, Form(ge=1)] = None,
) -> Job:
    """A finished sensitivity job from Distiller's CSV (top1/top5 in percent). The form fields are the JSON
    route's; a bad row is a 422 naming ``csv row <n> (line <m>)`` and the field."""
    try:
        options = json.loads(dataset_options) if dataset_options else {}
    except ValueError as exc:
        raise bad("dataset_options", f"not a JSON object ({exc})") from None
    try:
        head = ImportRequest.model_validate({
            "model": model, "dataset": dataset, "dataset_options": options, "group": group,
            "experiment_id": experiment_id, "points": [{"parameter": "-", "sparsity": 0}]})
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error.get("loc", ()))
        raise HTTPException(422, f"{field}: {clip(str(error.get('msg')).removeprefix('Value error, '), 300)}") from None
    if _line_count(csv_file.file) > MAX_IMPORT_POINTS + 1:  # counted at C speed before a row is parsed
        raise bad("csv", f"more than {MAX_IMPORT_POINTS:,} lines after the header: the limit of points per import; "
                         "split the file into several imports")
    lines = codecs.getreader("utf-8")(csv_file.file)
    rows, where = read_points_csv(lines)
    points = _validated(rows, where)
    job_group = check_rows(points, head.group, where)
    return import_job(session, head, points, job_group, source="csv", skipped=[])
