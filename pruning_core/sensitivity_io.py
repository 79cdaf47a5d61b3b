"""Sensitivity results on disk: Distiller's CSV (the exchange format) and a lossless JSON.

The CSV keeps exactly Distiller's columns ``parameter,sparsity,top1,top5,loss`` so existing
Distiller tooling reads ours and we read theirs; every other field of a point lives in the JSON,
``metrics`` included. A metric a task does not have (top1/top5 of a language model) is an empty cell,
as an unmeasured level's are: a number there would be a fake accuracy, and Distiller's own readers
(pandas, csv) take an empty cell as missing. A language model's CSV thus carries its token loss;
its perplexity is exp(loss), and in the JSON.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path

from pruning_core.points import CSV_HEADER, POINT_FIELDS, SensitivityPoint
from pruning_core.sensitivity import SensitivityResult


def write_csv(points: Iterable[SensitivityPoint], path: str | Path) -> Path:
    """Write Distiller's CSV; unmeasured points (after an early stop) and metrics the task lacks have empty cells."""
    path = Path(path)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_HEADER)
        for p in points:
            writer.writerow([p.parameter, repr(p.sparsity)] +
                            ["" if v is None else repr(float(v)) for v in (p.top1, p.top5, p.loss)])
    return path


def read_csv(path: str | Path) -> list[SensitivityPoint]:
    """Read a Distiller (or prunescope) sensitivity CSV; fields it lacks are left unknown."""
    path = Path(path)
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in CSV_HEADER if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: not a sensitivity CSV, missing column(s) {', '.join(missing)}")
        points = []
        for line, row in enumerate(reader, start=2):
            try:
                metrics = [None if row[c] in ("", None) else float(row[c]) for c in ("top1", "top5", "loss")]
                points.append(SensitivityPoint(parameter=row["parameter"], sparsity=float(row["sparsity"]),
                                               top1=metrics[0], top5=metrics[1], loss=metrics[2], samples=0,
                                               nnz=-1, measured=any(m is not None for m in metrics)))
            except ValueError as exc:
                raise ValueError(f"{path}:{line}: {exc}") from None
    return points


def to_json(result: SensitivityResult | Iterable[SensitivityPoint]) -> dict:
    """A JSON-ready dict: every point field, plus skipped parameters and engine for a full result."""
    if isinstance(result, SensitivityResult):
        return {"engine": result.engine, "engine_note": result.engine_note, "baseline": result.baseline,
                "info": result.info, "skipped": [vars(s) for s in result.skipped],
                "points": [p.to_dict() for p in result.points]}
    return {"points": [p.to_dict() for p in result]}


def write_json(result: SensitivityResult | Iterable[SensitivityPoint], path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(to_json(result), indent=1))
    return path


def points_from_json(data: dict) -> list[SensitivityPoint]:
    """Points back from ``to_json`` output (unknown keys ignored so newer files still load)."""
    return [SensitivityPoint(**{k: v for k, v in p.items() if k in POINT_FIELDS}) for p in data["points"]]


from pruning_core.report import write_html  # noqa: E402  (the HTML export lives with its plotting code)

__all__ = ["CSV_HEADER", "points_from_json", "read_csv", "to_json", "write_csv", "write_html", "write_json"]
