"""A sensitivity job with adaptive evaluation (issue 20) through the embedded server, as users start it: the
spec's option reaches the engine, and the stored points say which stopped early (approximate, the samples they
used, the interval's confidence) and which are exact (the level that prunes nothing is the baseline)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.stack import Stack, embedded_stack

pytestmark = pytest.mark.slow
SAMPLES = 256
SPEC = {"model": "digits-cnn", "dataset": "synthetic", "dataset_options": {"n": SAMPLES}, "levels": "0,0.9",
        "batch_size": 32, "params": ["conv2.weight", "fc.weight"], "adaptive_tolerance": 50.0}


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Stack]:
    stack = embedded_stack(tmp_path, SPEC)
    yield stack
    stack.stop()


def test_adaptive_job_stores_approximate_points(embedded: Stack) -> None:
    embedded.serve()
    job_id = embedded.submit()
    job = embedded.finished(job_id, timeout=90)
    assert job["status"] == "succeeded", job
    assert job["spec"]["adaptive_tolerance"] == 50.0 and job["spec"]["adaptive_confidence"] == 0.95
    points = embedded.points(job_id)
    assert sorted((p["parameter"], p["sparsity"]) for p in points) == \
        sorted((n, s) for n in SPEC["params"] for s in (0.0, 0.9))
    base = next(p["top1"] for p in points if p["sparsity"] == 0.0)
    for p in points:
        if p["sparsity"] == 0.0:  # prunes nothing: the baseline, measured on every sample
            assert not p["approximate"] and p["samples"] == SAMPLES and not (p["metrics"] or {}).get("confidence")
        else:  # an untrained model loses far less than 50 points: decided on the first batch
            assert p["approximate"] and p["samples"] == 32 and p["metrics"]["confidence"] == 0.95, p
            assert p["top1_low"] == max(0.0, base - 50.0) and p["top1_high"] is None  # the bound proved: within
