"""Importing a sensitivity analysis that ran elsewhere (issue 14): ``POST /jobs/import`` (JSON points) and
``POST /jobs/import/csv`` (Distiller's CSV) make a succeeded job whose points, plans and comparisons are
those of any other job; bad rows and oversized imports are refused naming the row, field and limit."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api import jobs as api_jobs
from api.routes.imports import MAX_IMPORT_POINTS
from api.shared.settings import Settings
from pruning_core.limits import DEFAULT_LIMITS
from pruning_core.points import CSV_HEADER
from tests.apps import make_app
from tests.live import Server, running_server
from tests.trust.hostile import send_hostile

PARAMS = ("conv1.weight", "conv2.weight", "fc.weight")  # digits-cnn's, in model order
LEVELS = (0.0, 0.5, 0.9)


def make_points(params: tuple[str, ...] = PARAMS, levels: tuple[float, ...] = LEVELS) -> list[dict[str, Any]]:
    """Points as a notebook's analyze() gives them: every parameter at every level, in model order."""
    return [{"parameter": p, "sparsity": s, "top1": 90.0 - 50 * s * (i + 1) / len(params),
             "top5": 99.0 - 10 * s, "loss": 0.3 + s * (i + 1), "samples": 360, "nnz": 1000 - int(1000 * s),
             "top1_low": 80.0 - 50 * s, "top1_high": 95.0 - 40 * s, "group": "element", "mode": "independent"}
            for i, p in enumerate(params) for s in levels]


def csv_text(points: list[dict[str, Any]]) -> str:
    rows = [",".join(CSV_HEADER)] + [",".join(str(p.get(c, "")) for c in CSV_HEADER) for p in points]
    return "\n".join(rows) + "\n"


def post_csv(client: Any, text: str | bytes, **form: Any) -> Any:
    data = {"model": "digits-cnn", "dataset": "digits", **form}
    return client.post("/api/v1/jobs/import/csv", data=data, files={"csv": ("sensitivity.csv", text, "text/csv")})


@pytest.fixture
def app_client(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The real app on SQLite and on PostgreSQL (``settings``), with a dispatcher that only records. The
    points cache is the process's and keyed by job id, so each store here gets its own (ids repeat)."""
    monkeypatch.setattr(api_jobs, "POINTS_CACHE", api_jobs.PointsCache())
    with TestClient(make_app(settings)) as c:
        yield c


def test_json_import_is_a_finished_job_with_every_point(app_client: TestClient) -> None:
    sent = make_points()
    skipped = [{"parameter": "conv1.bias", "reason": "1-D tensor"}]
    r = app_client.post("/api/v1/jobs/import", json={"model": "digits-cnn", "dataset": "digits", "points": sent,
                                                     "skipped": skipped})
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["status"] == "succeeded" and job["kind"] == "sensitivity"
    assert job["spec"] == {"model": "digits-cnn", "dataset": "digits", "dataset_options": {}, "batch_size": 256,
                           "device": "auto", "imported": True, "group": "element", "levels": list(LEVELS)}
    assert job["progress_done"] == job["progress_total"] == len(sent)
    assert job["result"]["imported"] == {"source": "json", "points": len(sent)}
    assert app_client.app.state.dispatcher.sent == []  # nothing was run
    got = app_client.get(f"/api/v1/jobs/{job['id']}/points").json()
    assert [{k: p[k] for k in s} for p, s in zip(got, sent, strict=True)] == sent  # model order kept
    assert got[0]["top5_low"] is None and got[0]["measured"] is True
    assert app_client.get(f"/api/v1/jobs/{job['id']}/skipped").json() == skipped
    listed = app_client.get("/api/v1/jobs", params={"kind": "sensitivity", "status": "succeeded"}).json()
    assert [j["id"] for j in listed["items"]] == [job["id"]]


def test_distiller_csv_import(app_client: TestClient) -> None:
    points = make_points(levels=(0.0, 0.25))
    text = csv_text(points) + "fc.weight,0.5,,,\n"  # Distiller leaves an unmeasured level's cells empty
    r = post_csv(app_client, text, group="element", dataset_options=json.dumps({"n": 100}), dataset="synthetic")
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["spec"]["levels"] == [0.0, 0.25, 0.5] and job["spec"]["dataset_options"] == {"n": 100}
    assert job["result"]["imported"]["source"] == "csv"
    exported = app_client.get(f"/api/v1/jobs/{job['id']}/points.csv").text
    lines = exported.splitlines()
    assert lines[0] == ",".join(CSV_HEADER) and len(lines) == len(points) + 2
    got = app_client.get(f"/api/v1/jobs/{job['id']}/points").json()
    assert [(p["parameter"], p["sparsity"], p["top1"]) for p in got[:2]] == [
        ("conv1.weight", 0.0, points[0]["top1"]), ("conv1.weight", 0.25, points[1]["top1"])]
    last = got[-1]
    assert (last["parameter"], last["sparsity"], last["top1"], last["measured"]) == ("fc.weight", 0.5, None, False)


@pytest.mark.parametrize(("row", "field", "words"), [
    ({"top1": 101.0}, "points.1.top1", "less than or equal to 100"),
    ({"sparsity": 1.5}, "points.1.sparsity", "less than or equal to 1"),
    ({"parameter": ""}, "points.1.parameter", "at least 1 character"),
    ({"group": "rows"}, "points.1.group", "element"),
    ({"colour": "red"}, "points.1.colour", "Extra inputs"),
    ({"loss": "NaN"}, "points.1.loss", "finite"),
])
def test_bad_json_rows_name_row_and_field(client: TestClient, row: dict, field: str, words: str) -> None:
    points = make_points()[:3]
    points[1] = {**points[1], **row}
    r = client.post("/api/v1/jobs/import", json={"model": "digits-cnn", "dataset": "digits", "points": points})
    assert r.status_code == 422, r.text
    assert field in r.json()["detail"] and words in r.json()["detail"], r.json()["detail"]
    assert client.get("/api/v1/jobs").json()["total"] == 0  # nothing half-imported


def test_cross_row_and_body_errors(client: TestClient) -> None:
    points = make_points()[:3]

    def answer(body: dict) -> tuple[int, str]:
        r = client.post("/api/v1/jobs/import", json={"model": "digits-cnn", "dataset": "digits", **body})
        return r.status_code, r.json()["detail"]

    status, detail = answer({"points": [points[0], points[1], {**points[0], "top1": 1.0}]})
    assert status == 422 and "points.2.sparsity" in detail and "given twice" in detail and "points.0" in detail
    status, detail = answer({"points": [points[0], {**points[1], "group": "filter"}]})
    assert status == 422 and "points.1.group" in detail and "'filter' differs" in detail
    status, detail = answer({"points": points, "group": "filter"})
    assert status == 422 and "points.0.group" in detail
    status, detail = answer({"points": points, "experiment_id": 7})
    assert status == 422 and "experiment_id" in detail and "does not exist" in detail
    status, detail = answer({"points": []})
    assert status == 422 and "points" in detail
    status, detail = answer({"points": points, "dataset_options": {"n": -4}, "dataset": "synthetic"})
    assert status == 422 and "dataset_options.n" in detail
    assert client.get("/api/v1/jobs").json()["total"] == 0


@pytest.mark.parametrize(("text", "field", "words"), [
    ("parameter,sparsity,top1\nfc.weight,0,1\n", "csv (line 1)", "missing: top5, loss"),
    ("parameter,sparsity,top1,top5,loss,extra\n", "csv (line 1)", "unknown or repeated: extra"),
    ("parameter,sparsity,top1,top5,loss\nfc.weight,0,90,99,0.1\nfc.weight,half,90,99,0.1\n",
     "csv row 2 (line 3).sparsity", "'half'"),
    ("parameter,sparsity,top1,top5,loss\nfc.weight,0,90,99\n", "csv row 1 (line 2)", "4 cells"),
    ("parameter,sparsity,top1,top5,loss\nfc.weight,0,190,99,0.1\n", "csv row 1 (line 2).top1", "100"),
    ("parameter,sparsity,top1,top5,loss\nfc.weight,0,90,99,0.1\nfc.weight,0.0,80,99,0.2\n",
     "csv row 2 (line 3).sparsity", "given twice"),
    ("parameter,sparsity,top1,top5,loss\n", "csv", "no rows"),
    (b"parameter,sparsity,top1,top5,loss\nfc.w\xff,0,1,1,1\n", "csv", "UTF-8"),
])
def test_bad_csv_rows_name_row_and_field(client: TestClient, text: str | bytes, field: str, words: str) -> None:
    r = post_csv(client, text)
    assert r.status_code == 422, r.text
    assert field in r.json()["detail"] and words in r.json()["detail"], r.json()["detail"]
    assert client.get("/api/v1/jobs").json()["total"] == 0


def test_csv_form_fields_are_checked(client: TestClient) -> None:
    good = csv_text(make_points()[:2])
    cases = (({"model": "bad name!"}, "model"), ({"group": "rows"}, "group"),
             ({"dataset_options": "{not json"}, "dataset_options"), ({"experiment_id": "0"}, "experiment_id"))
    for form, field in cases:
        r = post_csv(client, good, **form)
        assert r.status_code == 422 and field in r.text, (form, r.text)


def test_plans_work_on_an_imported_job_of_a_known_model(client: TestClient) -> None:
    job = client.post("/api/v1/jobs/import", json={"model": "digits-cnn", "dataset": "digits",
                                                   "points": make_points()}).json()
    plan = client.post("/api/v1/plans", json={"sensitivity_job": job["id"], "max_drop": 30})
    assert plan.status_code == 200, plan.text
    assert set(plan.json()["levels"]) <= set(PARAMS) and plan.json()["levels"]["conv1.weight"] == 0.9
    launched = client.post("/api/v1/plans/launch", json={"sensitivity_job": job["id"], "max_drop": 30, "epochs": 3})
    assert launched.status_code == 201, launched.text
    prune = launched.json()
    assert prune["kind"] == "prune" and prune["spec"]["model"] == "digits-cnn" and prune["spec"]["dataset"] == "digits"
    assert "conv1.weight" in prune["spec"]["schedule"]
    assert client.app.state.dispatcher.sent == [(prune["id"], 0)]  # the prune job, not the import, was dispatched


def test_plans_on_an_unknown_model_are_a_409_naming_it(client: TestClient) -> None:
    r = client.post("/api/v1/jobs/import", json={"model": "my-own-net", "dataset": "my-data", "points": make_points()})
    assert r.status_code == 201, r.text  # accepted for comparing and showing
    for path in ("/api/v1/plans", "/api/v1/plans/launch"):
        answer = client.post(path, json={"sensitivity_job": r.json()["id"], "max_drop": 5})
        assert answer.status_code == 409, answer.text
        assert "my-own-net" in answer.json()["detail"] and "does not know" in answer.json()["detail"]
    assert client.app.state.dispatcher.sent == []


# -- a live server: hostile imports, and an imported job compared with a measured one ------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("import-data"), OMP_NUM_THREADS="1") as srv:
        yield srv


@pytest.mark.timing  # promises an answer within a time bound: run alone (make test's second phase)
def test_oversized_json_import_is_refused_fast(server: Server) -> None:
    points = [{"parameter": "p", "sparsity": 0}] * (MAX_IMPORT_POINTS + 1)
    body = {"model": "digits-cnn", "dataset": "digits", "points": points}
    send_hostile(server.url, lambda c: c.post("/api/v1/jobs/import", json=body)).assert_refused(
        422, names=("points", f"{MAX_IMPORT_POINTS:,}"))


@pytest.mark.timing  # promises an answer within a time bound: run alone (make test's second phase)
def test_oversized_csv_import_is_refused_fast(server: Server) -> None:
    text = ",".join(CSV_HEADER) + "\n" + "".join(f"p{i},0,1,1,1\n" for i in range(MAX_IMPORT_POINTS + 1))
    send_hostile(server.url, lambda c: post_csv(c, text)).assert_refused(422, names=("csv", f"{MAX_IMPORT_POINTS:,}"))


@pytest.mark.timing  # promises an answer within a time bound: run alone (make test's second phase)
def test_too_many_levels_and_huge_cells_are_refused_fast(server: Server) -> None:
    levels = DEFAULT_LIMITS.max_levels + 1
    points = [{"parameter": "fc.weight", "sparsity": i / levels} for i in range(levels)]
    body = {"model": "digits-cnn", "dataset": "digits", "points": points}
    send_hostile(server.url, lambda c: c.post("/api/v1/jobs/import", json=body)).assert_refused(
        422, names=("points.sparsity", str(DEFAULT_LIMITS.max_levels)))
    huge = ",".join(CSV_HEADER) + "\n" + "x" * 300_000 + ",0,1,1,1\n"  # one cell past the csv module's field limit
    send_hostile(server.url, lambda c: post_csv(c, huge)).assert_refused(422, names=("csv",))
    long_name = ",".join(CSV_HEADER) + "\n" + "x" * 1000 + ",0,1,1,1\n"
    send_hostile(server.url, lambda c: post_csv(c, long_name)).assert_refused(422, names=("parameter", "255"))
    assert server.get("/api/v1/jobs")["total"] == 0


@pytest.mark.slow
def test_an_imported_job_compares_with_a_measured_one(server: Server, tmp_path: Path) -> None:
    measured = server.post("/api/v1/jobs", {"kind": "sensitivity", "spec": {
        "model": "digits-cnn", "dataset": "digits", "levels": "0,0.5,0.9", "params": ["conv2.weight", "fc.weight"]}})
    assert server.wait_job(measured["id"])["status"] == "succeeded"
    points = server.get(f"/api/v1/jobs/{measured['id']}/points")
    # the same analysis, as a notebook would send it, plus a parameter the service did not measure
    extra = {"parameter": "conv1.weight", "sparsity": 0.5, "top1": 12.5, "top5": 50.0, "loss": 2.0}
    imported = server.post("/api/v1/jobs/import", {"model": "digits-cnn", "dataset": "digits",
                                                   "points": [extra, *points]})
    assert imported["status"] == "succeeded"
    for metric in ("top1", "loss"):
        table = server.get(f"/api/v1/compare?jobs={measured['id']}&jobs={imported['id']}&metric={metric}")
        rows = {(r["parameter"], r["sparsity"]): r["values"] for r in table["rows"]}
        assert len(rows) == len(points) + 1
        for p in points:
            values = rows[(p["parameter"], p["sparsity"])]
            assert values == {str(measured["id"]): p[metric], str(imported["id"]): p[metric]}
        assert rows[("conv1.weight", 0.5)] == {str(measured["id"]): None, str(imported["id"]): extra[metric]}
