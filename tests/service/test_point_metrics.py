"""Points keep whichever metrics their task has (issue 14): a language model's loss and perplexity (no top1/top5)
and a custom metric go in through ``POST /jobs/import`` and ``Client.log_sensitivity``, come back through the
REST JSON, the Distiller CSV and the client's DataFrame, and plans and comparisons work on the metric chosen.
The round trip and the migration (from a store made before the column existed) run on SQLite and on
PostgreSQL; the library's files are checked in tests/core/test_point_metrics_files.py.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import text

from api import jobs as api_jobs
from api.client import Client
from api.client.local import InProcessTransport
from api.shared.settings import Settings
from api.store import make_engine, make_session_factory, migrate, repo
from api.store.db import alembic_config
from api.store.repo import point_rows
from pruning_core.points import (
    COLUMN_METRICS,
    HIGHER_IS_BETTER,
    LOWER_IS_BETTER,
    POINT_FIELDS,
    POINT_FLAGS,
    SensitivityPoint,
)
from tests.apps import make_app

PARAMS = ("embed.weight", "rnn.weight_ih_l0", "head.weight")  # a small LM's, in model order
LEVELS = (0.0, 0.5, 0.9)


def lm_points() -> list[SensitivityPoint]:
    """What a language-model sweep gives: token loss and perplexity, no top1/top5, and a custom metric (a
    mean absolute error, lower is better) that hurts the parameters in the other order than the loss does."""
    points = []
    for i, p in enumerate(PARAMS):
        for s in LEVELS:
            loss = 2.0 + (i + 1) * s
            points.append(SensitivityPoint(parameter=p, sparsity=s, top1=None, top5=None, loss=loss, samples=512,
                                           nnz=1000 - int(1000 * s),
                                           metrics={"perplexity": math.exp(loss), "mae": 0.1 + s * (3 - i)}))
    return points


def expected_levels(metric: str, tolerance: float, higher: bool) -> dict[str, float]:
    """Per parameter the highest level whose damage (drop if ``higher``, else rise) vs its 0.0 row is within
    ``tolerance``: the plan rule, applied here to the points' own values."""
    out = {}
    for p in PARAMS:
        values = {pt.sparsity: (pt.metrics or {}).get(metric, getattr(pt, metric, None))
                  for pt in lm_points() if pt.parameter == p}
        damage = {s: (values[0.0] - v if higher else v - values[0.0]) for s, v in values.items()}
        out[p] = max(s for s, d in damage.items() if d <= tolerance + 1e-12)
    return out


def _client_on(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Client]:
    """The real app (a dispatcher that only records) behind the Python client, in this process; the points
    cache is the process's and keyed by job id, so each store gets its own (ids repeat across stores)."""
    monkeypatch.setattr(api_jobs, "POINTS_CACHE", api_jobs.PointsCache())
    transport = InProcessTransport(make_app(settings))
    with Client(transport=transport, progress=False) as c:
        yield c
    transport.close()


@pytest.fixture
def py_client(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Client]:
    """On SQLite and on PostgreSQL: where the store's JSON handling matters."""
    yield from _client_on(settings, monkeypatch)


@pytest.fixture
def sqlite_client(sqlite_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Client]:
    """On SQLite alone: plans, comparisons and validation read the points the same way on both stores."""
    yield from _client_on(sqlite_settings, monkeypatch)


def _import(client: Client, points: list[SensitivityPoint], model: str = "digits-cnn") -> Any:
    body = {"model": model, "dataset": "synthetic", "points": [p.to_dict() for p in points]}
    return client._http.post("/jobs/import", json=body)


def test_lm_points_go_in_and_come_back_through_rest_csv_and_the_frame(py_client: Client) -> None:
    sent = lm_points()
    r = _import(py_client, sent)
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]

    got = py_client._json("GET", f"/jobs/{job_id}/points")
    assert [{k: p[k] for k in POINT_FIELDS} for p in got] == [p.to_dict() for p in sent]
    assert got[0]["top1"] is None and got[0]["metrics"] == {"perplexity": math.exp(2.0), "mae": 0.1}

    # Distiller's five columns: top1/top5 the task lacks are empty cells, the token loss is kept
    lines = py_client.points_csv(job_id).splitlines()
    assert lines[0] == "parameter,sparsity,top1,top5,loss" and len(lines) == 1 + len(sent)
    assert lines[1:3] == ["embed.weight,0.0,,,2.0", "embed.weight,0.5,,,2.5"]

    frame = py_client.points(job_id)
    assert list(frame.columns) == [*POINT_FIELDS, "perplexity", "mae"]
    assert frame["perplexity"].tolist() == [p.metrics["perplexity"] for p in sent]
    assert frame["mae"].tolist() == [p.metrics["mae"] for p in sent]
    assert frame["top1"].isna().all()

    # the frame goes back in as it came out: the same job again, metrics and all
    again = py_client.log_sensitivity(frame, model="digits-cnn", dataset="synthetic")
    assert py_client._json("GET", f"/jobs/{again.id}/points") == got

    figure = py_client.plot(job_id, "perplexity")
    lines_y = {t.name: list(t.y) for t in figure.data}
    assert lines_y["head.weight"] == [p.metrics["perplexity"] for p in sent if p.parameter == "head.weight"]
    assert figure.layout.yaxis.title.text == "perplexity"
    with pytest.raises(ValueError, match="have no 'top1'; they have: loss, perplexity, mae"):
        py_client.plot(job_id, "top1")

    # log_sensitivity sends SensitivityPoints without top1 as they are
    logged = py_client.log_sensitivity(sent, model="digits-cnn", dataset="synthetic", group="element")
    assert logged.status == "succeeded" and py_client._json("GET", f"/jobs/{logged.id}/points") == got


# (metric, tolerance, the direction the plan must use, the one the request gives)
PLAN_CASES = [("perplexity", 11.0, False, None),  # a known direction: a rise
              ("loss", 0.6, False, None),
              ("mae", 1.0, False, False)]  # a custom metric says its direction


def test_plans_on_any_metric_the_points_have(sqlite_client: Client) -> None:
    job_id = _import(sqlite_client, lm_points()).json()["id"]
    for metric, tolerance, higher, given in PLAN_CASES:
        body = {"sensitivity_job": job_id, "max_drop": tolerance, "metric": metric, "epochs": 3,
                **({} if given is None else {"higher_is_better": given})}
        r = sqlite_client._http.post("/plans", json=body)
        assert r.status_code == 200, r.text
        answer = r.json()
        expected = expected_levels(metric, tolerance, higher)
        assert answer["levels"] == expected and len(set(expected.values())) > 1  # the tolerance really chose
        assert answer["metric"] == metric and answer["higher_is_better"] is higher
        assert answer["unit"] == f"{metric} rise"
        for name, level in expected.items():
            assert (name in answer["yaml"]) == (level > 0)
        assert sqlite_client.plan(job_id, tolerance, metric=metric, higher_is_better=given, epochs=3) == answer["yaml"]

    # a custom metric plans the way its direction says, and must say it
    lower = sqlite_client._http.post("/plans", json={"sensitivity_job": job_id, "max_drop": 1.0, "metric": "mae",
                                              "higher_is_better": False, "epochs": 3}).json()
    higher = sqlite_client._http.post("/plans", json={"sensitivity_job": job_id, "max_drop": 1.0, "metric": "mae",
                                               "higher_is_better": True, "epochs": 3}).json()
    assert lower["levels"] == expected_levels("mae", 1.0, False) != higher["levels"]
    assert higher["levels"] == dict.fromkeys(PARAMS, 0.9)  # a rising mae read as "higher is better" never hurts
    r = sqlite_client._http.post("/plans", json={"sensitivity_job": job_id, "max_drop": 1.0, "metric": "mae"})
    assert r.status_code == 422 and "higher_is_better" in r.text and "'mae'" in r.text, r.text


def test_a_metric_the_points_do_not_have_is_a_422_naming_those_they_have(sqlite_client: Client) -> None:
    job_id = _import(sqlite_client, lm_points()).json()["id"]
    for body in ({"max_drop": 1.0}, {"max_drop": 1.0, "metric": "bleu", "higher_is_better": True}):
        r = sqlite_client._http.post("/plans", json={"sensitivity_job": job_id, **body})
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        assert detail.startswith("metric: ") and detail.endswith("they have: loss, perplexity, mae"), detail
    r = sqlite_client._http.post("/plans", json={"sensitivity_job": job_id, "max_drop": 1.0, "metric": "per plexity"})
    assert r.status_code == 422 and "metric" in r.text

    # comparisons: on perplexity side by side (null where a job lacks the point), a metric neither has a 422
    first = job_id
    shifted = [SensitivityPoint(**{**p.to_dict(), "metrics": {"perplexity": p.metrics["perplexity"] + 1.0}})
               for p in lm_points() if p.parameter != "head.weight"]
    second = _import(sqlite_client, shifted).json()["id"]
    frame = sqlite_client.compare([first, second], metric="perplexity")
    assert frame.attrs["metric"] == "perplexity" and len(frame) == len(lm_points())
    by_key = {(r.parameter, r.sparsity): r for r in frame.itertuples(index=False)}
    for p in lm_points():
        row = by_key[(p.parameter, p.sparsity)]
        assert row[2] == p.metrics["perplexity"]
        assert math.isnan(row[3]) if p.parameter == "head.weight" else row[3] == p.metrics["perplexity"] + 1.0
    r = sqlite_client._http.get("/compare", params={"jobs": [first, second], "metric": "top1"})
    assert r.status_code == 422 and r.json()["detail"].endswith("they have: loss, perplexity, mae"), r.text


BAD_METRICS = [{"top1": 1.0}, {"sparsity": 0.5}, {"bad name": 1.0}, {"p": "nan"}, {f"m{i}": 1.0 for i in range(17)}]


def test_bad_metrics_are_a_422_naming_the_point(sqlite_client: Client) -> None:
    for metrics in BAD_METRICS:
        point = {"parameter": "fc.weight", "sparsity": 0.0, "loss": 1.0, "metrics": metrics}
        r = sqlite_client._http.post("/jobs/import", json={"model": "digits-cnn", "dataset": "synthetic",
                                                           "points": [point]})
        assert r.status_code == 422 and "points.0.metrics" in r.text, (metrics, r.text)
    assert sqlite_client._json("GET", "/jobs")["items"] == []


def test_the_migration_keeps_existing_points_and_then_stores_metrics(settings: Settings) -> None:
    """A store at 0006 (before ``metrics``) with a point in it: upgraded, the point reads back with no metrics,
    and points with metrics are stored beside it."""
    engine = make_engine(settings.db_url)
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0006")
        job_id = conn.execute(text(
            "INSERT INTO jobs (kind, spec, status, progress_done, progress_total, cancel_requested, shards_total, "
            "created_at) VALUES ('sensitivity', '{}', 'succeeded', 1, 1, false, 1, CURRENT_TIMESTAMP) "
            "RETURNING id")).scalar()
        conn.execute(text(
            "INSERT INTO sensitivity_points (job_id, parameter, sparsity, top1, top5, loss, measured, approximate, "
            "subset, \"group\", mode, created_at) VALUES (:job, 'fc.weight', 0.5, 90, 99, 0.3, true, false, false, "
            "'element', 'independent', CURRENT_TIMESTAMP)"), {"job": job_id})
    migrate(engine)
    factory = make_session_factory(engine)
    with factory() as s:
        (old,) = point_rows(s, job_id)
        assert (old["parameter"], old["top1"], old["metrics"]) == ("fc.weight", 90.0, None)
        new = [p.to_dict() for p in lm_points()]
        assert repo.upsert_points(s, job_id, ((p, i) for i, p in enumerate(new)), shard=0, worker="w") == len(new)
        s.commit()
        rows = {r["parameter"] + f"@{r['sparsity']}": r for r in point_rows(s, job_id)}
        assert rows["fc.weight@0.5"]["metrics"] is None
        assert [rows[f"{p['parameter']}@{p['sparsity']}"]["metrics"] for p in new] == [p["metrics"] for p in new]
        # on the store a point without metrics is SQL NULL, not JSON null: both stores read None the same way
        nulls = s.execute(text("SELECT count(*) FROM sensitivity_points WHERE metrics IS NULL")).scalar()
        assert nulls == 1
    engine.dispose()



def test_the_dashboard_knows_the_directions_the_library_defines() -> None:
    """frontend/sensitivity.js keeps its own table of metric labels; its directions must be points.py's."""
    source = (Path(__file__).resolve().parents[2] / "frontend" / "sensitivity.js").read_text()
    table = dict(re.findall(r"^\s+([A-Za-z]\w*): \{ label: .*goodHigh: (true|false) \},$", source, re.M))
    assert {k for k, v in table.items() if v == "true"} == HIGHER_IS_BETTER
    assert {k for k, v in table.items() if v == "false"} == LOWER_IS_BETTER
    columns = re.search(r"export const COLUMN_METRICS = \[(.*)\];", source).group(1)
    assert tuple(re.findall(r'"(\w+)"', columns)) == COLUMN_METRICS
    flags = re.search(r"export const POINT_FLAGS = \[(.*)\];", source).group(1)
    assert tuple(re.findall(r'"(\w+)"', flags)) == POINT_FLAGS


def test_the_jobs_page_knows_every_job_kind() -> None:
    """frontend/jobs.js filters by kind from its own list; it must be the store's JOB_KINDS."""
    from api.store.models import JOB_KINDS

    source = (Path(__file__).resolve().parents[2] / "frontend" / "jobs.js").read_text()
    kinds = re.search(r"^const KINDS = \[(.*)\];", source, re.M).group(1)
    assert set(re.findall(r'"(\w+)"', kinds)) == set(JOB_KINDS)


def test_the_plan_page_offers_the_optimisers_objectives() -> None:
    """frontend/plan.js lists the objectives for its menu; they must be pruning_core.plan's."""
    from pruning_core.plan import OBJECTIVES

    source = (Path(__file__).resolve().parents[2] / "frontend" / "plan.js").read_text()
    listed = re.search(r"^export const OBJECTIVES = \[(.*)\];", source, re.M).group(1)
    assert tuple(re.findall(r'"(\w+)"', listed)) == OBJECTIVES
