"""Issue 18: one logging configuration for serve and worker; with PRUNESCOPE_LOG_FORMAT=json every line a
job's run writes is a JSON object, and the job's records carry its id, shard and worker."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from api.logs import configure_logging, job_context
from tests.live import running_server


def test_text_lines_name_the_job_only_inside_one() -> None:
    stream = io.StringIO()
    handler = configure_logging("text", "INFO", stream=stream)
    try:
        log = logging.getLogger("prunescope.test")
        log.info("outside")
        with job_context(job_id=7, shard=1, worker="w1"):
            log.info("inside")
    finally:
        logging.getLogger().removeHandler(handler)
    outside, inside = stream.getvalue().splitlines()
    assert outside.endswith("prunescope.test: outside") and "[job" not in outside
    assert inside.endswith("prunescope.test [job 7 shard 1 worker w1]: inside")
    with pytest.raises(ValueError, match="text, json"):
        configure_logging("xml")


@pytest.mark.slow  # a real `prunescope serve` and one tiny job: ~10 s here
def test_every_line_of_a_served_job_is_json_with_its_id(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_server(data, PRUNESCOPE_LOG_FORMAT="json") as server:
        job = server.post("/api/v1/jobs", {"kind": "sensitivity", "spec": {
            "model": "digits-cnn", "dataset": "digits", "levels": "0,0.5", "params": ["conv1.weight"]}})
        assert server.wait_job(job["id"])["status"] == "succeeded"
    lines = (data / "server.log").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line parses
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    of_job = [r for r in records if r.get("job_id") == job["id"]]
    assert any("started" in r["message"] for r in of_job) and any("ended" in r["message"] for r in of_job)
    assert all(r["shard"] == 0 and r["worker"].startswith("embedded@") for r in of_job)
    assert all(r.get("job_id") == job["id"] for r in records if r["logger"] == "worker.runners")
