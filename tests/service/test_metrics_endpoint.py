"""Issue 18: ``/metrics`` parses with prometheus-client's parser, its counters move as a job runs, and it is
guarded by the token like every route."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.slow  # runs a job on the shared export service (its setup: ~10 s here)


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _scrape(client) -> dict[tuple[str, tuple], float]:  # noqa: ANN001 - an api.client.Client
    response = client._http.get(f"{client.url}/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return _samples(response.text)


def _http_count(samples: dict, route: str) -> float:
    return sum(v for (name, labels), v in samples.items()
               if name == "prunescope_http_request_duration_seconds_count" and ("route", route) in labels)


def test_counters_move_as_a_job_runs(finished_jobs: tuple) -> None:
    client, _ = finished_jobs
    before = _scrape(client)
    job = client.sense("digits-cnn", "digits", levels="0,0.5", params=["conv1.weight"], shards=1)
    assert job.status == "succeeded"
    after = _scrape(client)
    succeeded = ("prunescope_jobs", (("kind", "sensitivity"), ("status", "succeeded")))
    assert after[succeeded] == before[succeeded] + 1
    assert after[("prunescope_points_stored_total", ())] == before[("prunescope_points_stored_total", ())] + 2
    count = ("prunescope_shard_duration_seconds_count", ())
    assert after[count] == before[count] + 1
    assert after[("prunescope_shard_duration_seconds_sum", ())] > before[("prunescope_shard_duration_seconds_sum", ())]
    assert after[("prunescope_shards", (("status", "queued"),))] == 0
    # the request latencies are labelled by route template, never the raw path
    routes = {dict(labels)["route"] for name, labels in after if name.startswith("prunescope_http_request")}
    assert _http_count(after, "/api/v1/jobs/{job_id}") > _http_count(before, "/api/v1/jobs/{job_id}"), routes
    assert not any(f"/jobs/{job.id}" in dict(labels).get("route", "") for _, labels in after)
    assert _http_count(after, "/api/v1/jobs") >= 1  # the POST
    live = after[("prunescope_workers_live", ())]
    devices = [dict(labels) for name, labels in after if name == "prunescope_worker_devices"]
    assert live >= 1 and any(d["device"] == "cpu" for d in devices)


def test_metrics_need_the_token_when_one_is_set(client: TestClient, sqlite_settings) -> None:  # noqa: ANN001
    sqlite_settings.token = "s3cret-token"
    assert client.get("/metrics").status_code == 401
    answer = client.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
    assert answer.status_code == 200 and ("prunescope_jobs", (("kind", "train"), ("status", "queued"))) in _samples(
        answer.text)


def test_the_broker_queue_depth_is_read_through_the_dispatchers_client(redis_url: str, tmp_path) -> None:
    """With a broker, /metrics reports the queue's length; the dispatcher's probes reuse one Redis client."""
    import uuid

    import redis

    from api.app import create_app
    from api.shared.dispatch import CeleryDispatcher
    from tests.apps import sqlite_settings_in

    queue = f"prunescope-test-{uuid.uuid4().hex[:8]}"
    raw = redis.Redis.from_url(redis_url)
    raw.rpush(queue, "a", "b", "c")
    try:
        dispatcher = CeleryDispatcher(redis_url, 3600, queue)
        assert dispatcher.queue_depth() == 3 and dispatcher.healthy()[0]
        assert dispatcher._broker(1.0) is dispatcher._broker(1.0)  # made once, not per call
        settings = sqlite_settings_in(tmp_path, broker_url=redis_url, queue=queue)
        with TestClient(create_app(settings, dispatcher=dispatcher)) as client:
            samples = _samples(client.get("/metrics").text)
        assert samples[("prunescope_broker_queue_depth", (("queue", queue),))] == 3
    finally:
        raw.delete(queue)
