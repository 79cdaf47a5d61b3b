"""A sensitivity point's fields are defined once (pruning_core.points); every layer derives or checks them.

The SQL row (which a migration must spell out) is checked column for column; the REST JSON, the CSV,
the JSON export and the client's DataFrame are derived, and a point goes through all of them unchanged.
"""

from __future__ import annotations

import subprocess
import sys
import typing
from dataclasses import asdict, fields
from pathlib import Path

from sqlalchemy.sql.sqltypes import JSON, Boolean, Float, Integer, String

from api.client import POINT_COLUMNS
from api.client.frames import points_frame
from api.routes.points import router
from api.store import make_engine, make_session_factory, migrate, repo
from api.store.models import SensitivityPointRow
from api.store.repo import point_rows
from pruning_core.points import CSV_HEADER, POINT_FIELDS, SensitivityPoint, csv_text
from pruning_core.sensitivity_io import points_from_json, read_csv, to_json, write_csv

#: SQL columns that are bookkeeping of the store, not fields of a point
STORE_COLUMNS = {"id", "job_id", "param_index", "shard", "worker", "created_at"}
SQL_KINDS = {str: (String,), int: (Integer,), float: (Float,), bool: (Boolean,), dict: (JSON,)}


def _point(**overrides: object) -> SensitivityPoint:
    values = dict(parameter="conv1.weight", sparsity=0.5, top1=91.25, top5=99.5, loss=0.3125, samples=400, nnz=72,
                  top1_low=88.0, top1_high=93.5, top5_low=98.0, top5_high=99.9, macs=1234, params_left=800,
                  measured=True, approximate=True, subset=True, group="filter", mode="coupled", latency_ms=0.25)
    return SensitivityPoint(**{**values, **overrides})  # type: ignore[arg-type]


def test_the_sql_row_has_a_column_of_the_right_type_for_every_field_and_no_other() -> None:
    columns = SensitivityPointRow.__table__.columns
    assert set(columns.keys()) - STORE_COLUMNS == set(POINT_FIELDS)
    hints = typing.get_type_hints(SensitivityPoint)
    for f in fields(SensitivityPoint):
        kinds = [k for k in typing.get_args(hints[f.name]) if k is not type(None)] or [hints[f.name]]
        (kind,) = kinds
        kind = typing.get_origin(kind) or kind  # dict[str, float] is stored as a JSON object
        column = columns[f.name]
        allowed = SQL_KINDS[kind] + ((Float,) if kind is int else ())  # an int count may be stored as a double
        assert isinstance(column.type, allowed), (f.name, column.type)
        if type(None) in typing.get_args(hints[f.name]):
            assert column.nullable, f"{f.name} may be None but its column is NOT NULL"


def test_a_point_goes_through_store_rest_csv_json_and_client_unchanged(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine)
    factory = make_session_factory(engine)
    point = _point()
    with factory() as s:
        job_id = repo.create_job(s, kind="sensitivity", spec={}).id
        repo.upsert_point(s, job_id, asdict(point), shard=0, worker="w", param_index=0)
        s.commit()
        (row,) = point_rows(s, job_id)
    row.pop("id")
    assert tuple(row) == POINT_FIELDS  # the REST JSON: every field, in the point's order
    assert row == asdict(point)

    assert csv_text([row]).splitlines() == [",".join(CSV_HEADER), "conv1.weight,0.5,91.25,99.5,0.3125"]
    (back,) = read_csv(write_csv([point], tmp_path / "s.csv"))
    assert {k: getattr(back, k) for k in CSV_HEADER} == {k: getattr(point, k) for k in CSV_HEADER}

    exported = to_json([point])["points"]
    assert tuple(exported[0]) == POINT_FIELDS and points_from_json({"points": exported}) == [point]

    frame = points_frame([row])
    assert tuple(frame.columns) == POINT_FIELDS == tuple(POINT_COLUMNS)
    assert frame.iloc[0].to_dict() == asdict(point)


def test_the_rest_schema_of_points_is_the_dataclass() -> None:
    from pydantic import TypeAdapter

    (route,) = [r for r in router.routes if getattr(r, "path", "") == "/jobs/{job_id}/points"]
    schema = TypeAdapter(route.response_model).json_schema()
    assert tuple(schema["$defs"]["SensitivityPoint"]["properties"]) == POINT_FIELDS


def test_the_point_definition_and_the_store_import_no_torch() -> None:
    code = ("import sys, pruning_core.points, pruning_core.groups, api.store.models, api.client; "
            "from api.client import POINT_COLUMNS; print('torch' in sys.modules, len(POINT_COLUMNS))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", str(len(POINT_FIELDS))]
