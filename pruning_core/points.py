"""A sensitivity point: its fields, defined once and torch-free.

The dataclass below is the one list of a point's fields. The SQL row (``api.store.models``), the REST
JSON of ``GET /jobs/{id}/points``, the JSON export and the client's DataFrame columns are derived from
:data:`POINT_FIELDS` (the SQL columns, which a migration must spell out, are checked against it by a
test); Distiller's CSV keeps its own five columns, :data:`CSV_HEADER`, a subset of them.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields


@dataclass
class SensitivityPoint:
    """One measured (or, after an early stop, unmeasured) point of a sensitivity curve.

    top1/top5 and their 95 % Wilson bounds are percentages; loss is the mean cross-entropy.
    ``nnz`` counts the non-zeros left in the parameter; ``macs``/``params_left`` (structured groups
    only) count what is left of the model once fully-zero filters/channels are removed;
    ``latency_ms`` (``latency=True`` only) is measured on a copy thinned with Torch-Pruning.
    """

    parameter: str
    sparsity: float
    top1: float | None
    top5: float | None
    loss: float | None
    samples: int
    nnz: int
    top1_low: float | None = None
    top1_high: float | None = None
    top5_low: float | None = None
    top5_high: float | None = None
    macs: int | None = None
    params_left: int | None = None
    measured: bool = True
    approximate: bool = False
    subset: bool = False
    group: str = "element"
    mode: str = "independent"
    latency_ms: float | None = None  # fastest forward (ms) of the physically thinned model, levels timed side by side
    metrics: dict[str, float] | None = None  # the task's other metrics (perplexity) and a custom metric's values

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def thinnable(self) -> bool | None:
        """Structured groups: whether physical thinning removes every filter/channel this point zeroes in its
        parameter (False: ``macs``/``params_left`` count them as kept, e.g. filters feeding a residual add in
        independent mode); None where not known. Kept under ``metrics`` (:data:`POINT_FLAGS`)."""
        value = (self.metrics or {}).get("thinnable")
        return None if value is None else bool(value)

    @property
    def confidence(self) -> float | None:
        """An adaptive point stopped early (``pruning_core.adaptive``, ``approximate``): the confidence of its
        sequential top1 interval (``top1_low``/``top1_high``); None for a point measured on all its samples, whose
        interval is the 95 % Wilson one. Kept under ``metrics`` (:data:`POINT_FLAGS`)."""
        value = (self.metrics or {}).get(CONFIDENCE)
        return None if value is None else float(value)


#: Every field of a point, in order: the REST JSON, the JSON export and the client's columns.
POINT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(SensitivityPoint))
#: Distiller's sensitivity CSV columns (top1/top5 in percent).
CSV_HEADER: tuple[str, ...] = ("parameter", "sparsity", "top1", "top5", "loss")


def csv_text(rows: Iterable[Mapping[str, object]]) -> str:
    """Distiller's sensitivity CSV of point rows (dicts, as REST serves them): ``parameter,sparsity,top1,top5,
    loss`` (top1/top5 in percent). A metric the points lack (top1/top5 of a language model, every metric of an
    unmeasured level) is an empty cell; ``metrics`` (perplexity, custom) are in the JSON only. What
    ``GET /jobs/{id}/points.csv`` serves and an export writes."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for r in rows:
        writer.writerow([r.get(k) for k in CSV_HEADER])
    return buf.getvalue()
assert set(CSV_HEADER) <= set(POINT_FIELDS), "the CSV columns are point fields"

#: Metrics kept as their own fields; any other metric a point carries is a key of ``metrics``.
COLUMN_METRICS: tuple[str, ...] = ("top1", "top5", "loss")
#: The key of ``metrics`` holding an adaptive point's interval confidence (``SensitivityPoint.confidence``).
CONFIDENCE = "confidence"
#: Keys of ``metrics`` that describe the point (flags: 1.0 true, 0.0 false; an adaptive point's confidence), not
#: metrics: no plan, selector or column lists them as a metric. They live there because a point's SQL columns
#: are fixed by migrations.
POINT_FLAGS: tuple[str, ...] = ("thinnable", CONFIDENCE)
#: Known metrics where smaller is better (a custom metric says its direction where it is used).
LOWER_IS_BETTER: frozenset[str] = frozenset({"loss", "perplexity"})
#: Known metrics where larger is better.
HIGHER_IS_BETTER: frozenset[str] = frozenset({"top1", "top5"})


def metric_value(point: object, name: str) -> float | None:
    """The value of metric ``name`` on a point (a dataclass, a row or a dict): a column, or a key of
    its ``metrics``; None where the point does not have it."""
    get = point.get if isinstance(point, dict) else (lambda k, d=None: getattr(point, k, d))
    if name in COLUMN_METRICS:
        value = get(name)
    else:
        value = (get("metrics") or {}).get(name)
    return None if value is None else float(value)


def higher_is_better(name: str, given: bool | None = None) -> bool:
    """Whether a larger ``name`` is better: known for the built-in metrics, else ``given`` must say."""
    if given is not None:
        return given
    if name in HIGHER_IS_BETTER or name in LOWER_IS_BETTER:
        return name in HIGHER_IS_BETTER
    known = ", ".join(sorted(HIGHER_IS_BETTER | LOWER_IS_BETTER))
    raise ValueError(f"metric {name!r} is not a built-in one ({known}): "
                     "say whether higher is better (higher_is_better)")


#: What a metric may be called (a key of ``metrics``, a plan's or a comparison's ``metric``): a short name
#: that is safe in a URL query, a CSV header and a DataFrame column.
METRIC_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.@-]{0,63}$"


def metric_names(points: Iterable[object]) -> list[str]:
    """The metrics a set of points has: the columns (top1, top5, loss) some point has a value of, then the
    keys of their ``metrics`` as first seen; what a selector lists and a plan may be asked for."""
    points = list(points)
    names = [c for c in COLUMN_METRICS if any(metric_value(p, c) is not None for p in points)]
    for p in points:
        extra = p.get("metrics") if isinstance(p, dict) else getattr(p, "metrics", None)
        names.extend(k for k in (extra or {}) if k not in names and k not in POINT_FLAGS)
    return names
