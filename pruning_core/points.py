"""A sensitivity point: its fields, defined once and torch-free.

The dataclass below is the one list of a point's fields. The SQL row (``api.store.models``), the REST
JSON of ``GET /jobs/{id}/points``, the JSON export and the client's DataFrame columns are derived from
:data:`POINT_FIELDS` (the SQL columns, which a migration must spell out, are checked against it by a
test); Distiller's CSV keeps its own five columns, :data:`CSV_HEADER`, a subset of them.
"""

from __future__ import annotations

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

    def to_dict(self) -> dict:
        return asdict(self)


#: Every field of a point, in order: the REST JSON, the JSON export and the client's columns.
POINT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(SensitivityPoint))
#: Distiller's sensitivity CSV columns (top1/top5 in percent).
CSV_HEADER: tuple[str, ...] = ("parameter", "sparsity", "top1", "top5", "loss")
assert set(CSV_HEADER) <= set(POINT_FIELDS), "the CSV columns are point fields"
