"""The job routes split by resource (issue 19): jobs, events and points routers over one module of job
functions. Clients depend on the URLs, methods and operation ids, so those are pinned here; the rules the
routers share (404 and 409 wording, the list stream matched before ``/jobs/{job_id}``) are checked on a
real app over SQLite (the shared ``client`` fixture)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

import api.jobs
from api.routes import events, jobs, points
from api.store import repo

# (method, path under /api/v1, operation id, router module): what existed before the split, unchanged.
JOB_OPERATIONS = [
    ("POST", "/jobs", "create_job_api_v1_jobs_post", "api.routes.jobs"),
    ("GET", "/jobs", "list_jobs_api_v1_jobs_get", "api.routes.jobs"),
    ("GET", "/jobs/events", "jobs_events_api_v1_jobs_events_get", "api.routes.events"),
    ("GET", "/jobs/{job_id}", "get_job_api_v1_jobs__job_id__get", "api.routes.jobs"),
    ("DELETE", "/jobs/{job_id}", "delete_job_api_v1_jobs__job_id__delete", "api.routes.jobs"),
    ("PATCH", "/jobs/{job_id}", "label_job_api_v1_jobs__job_id__patch", "api.routes.jobs"),  # name, tags
    ("POST", "/jobs/{job_id}/cancel", "cancel_job_api_v1_jobs__job_id__cancel_post", "api.routes.jobs"),
    ("GET", "/jobs/{job_id}/points", "get_points_api_v1_jobs__job_id__points_get", "api.routes.points"),
    ("GET", "/jobs/{job_id}/points.csv", "get_points_csv_api_v1_jobs__job_id__points_csv_get", "api.routes.points"),
    ("GET", "/jobs/{job_id}/skipped", "get_skipped_api_v1_jobs__job_id__skipped_get", "api.routes.points"),
    ("GET", "/jobs/{job_id}/epochs", "get_epochs_api_v1_jobs__job_id__epochs_get", "api.routes.jobs"),
    ("GET", "/jobs/{job_id}/artifacts", "get_job_artifacts_api_v1_jobs__job_id__artifacts_get", "api.routes.jobs"),
    ("GET", "/jobs/{job_id}/events", "job_events_api_v1_jobs__job_id__events_get", "api.routes.events"),
]


def test_job_operations_keep_their_urls_methods_ids_and_live_in_their_resource_router(client: TestClient) -> None:
    schema = client.get("/api/v1/openapi.json").json()
    found = sorted((method.upper(), path.removeprefix("/api/v1"), op["operationId"])
                   for path, ops in schema["paths"].items() for method, op in ops.items()
                   if "jobs" in op.get("tags", []))
    assert found == sorted(op[:3] for op in JOB_OPERATIONS)
    modules = {(method, route.path): module.__name__ for module in (events, jobs, points)
               for route in module.router.routes if isinstance(route, APIRoute) for method in route.methods}
    assert modules == {(m, p): module for m, p, _, module in JOB_OPERATIONS}


def test_the_job_functions_module_declares_no_routes() -> None:
    """Planning and datasets import job functions from api.jobs; it must not drag routes along."""
    assert not [name for name, value in vars(api.jobs).items() if isinstance(value, APIRouter)]
    assert not [name for name, value in vars(api.jobs).items()
                if getattr(value, "__module__", "").startswith("api.routes")]


def test_the_list_stream_is_matched_before_a_job_id(client: TestClient) -> None:
    """``/jobs/events`` is the stream, not ``/jobs/{job_id}`` with a bad id (the events router comes first)."""
    r = client.get("/api/v1/jobs/events", params={"max_s": 0.1, "poll_s": 0.05})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.text.rstrip().endswith('data: {"reason": "max_s"}')


def test_points_routes_share_one_kind_rule_and_one_not_found(client: TestClient) -> None:
    with client.app.state.session_factory() as s:
        train_id = repo.create_job(s, kind="train", spec={}).id
        s.commit()
    conflicts = {path: client.get(f"/api/v1/jobs/{train_id}/{path}") for path in ("points", "points.csv", "skipped")}
    assert {p: r.status_code for p, r in conflicts.items()} == dict.fromkeys(conflicts, 409)
    assert {r.json()["detail"] for r in conflicts.values()} == {
        f"job {train_id} is a train job: points belong to sensitivity jobs"}

    missing = train_id + 1000
    paths = ("", "/points", "/points.csv", "/skipped", "/epochs", "/artifacts", "/events")
    answers = {path: client.get(f"/api/v1/jobs/{missing}{path}") for path in paths}
    assert {p: r.status_code for p, r in answers.items()} == dict.fromkeys(paths, 404)
    assert {r.json()["detail"] for r in answers.values()} == {f"job {missing} does not exist"}
