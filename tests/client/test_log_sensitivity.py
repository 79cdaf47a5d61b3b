"""``Client.log_sensitivity`` (issue 14): an ``analyze()`` run in this process becomes a finished job, through
``Client.local()`` and through a live server, with every point as the analysis measured it; on a live server
it compares with the service's own sweep of the same weights point for point."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from api.client import Client, Job
from pruning_core.points import POINT_FIELDS

SWEEP = {"levels": "0,0.5,0.9", "params": ["conv2.weight", "conv3.weight", "bn1.weight"], "group": "filter"}


def digits_analysis(model: Any) -> Any:
    """analyze() as the runner calls it (digits test split, the spec's batch size, the fast engine, CPU)."""
    import torch

    from pruning_core.datasets import load_dataset, make_loader
    from pruning_core.levels import parse_levels
    from pruning_core.sensitivity import analyze

    torch.set_num_threads(1)  # as the test server (conftest.SERVER_ENV): same reductions, same bits
    loader = make_loader(load_dataset("digits", "test"), batch_size=256)
    return analyze(model, loader, levels=parse_levels(SWEEP["levels"]), params=SWEEP["params"],
                   group=SWEEP["group"], device="cpu", engine="fast")


def expected_frame(result: Any) -> pd.DataFrame:
    return pd.DataFrame([p.to_dict() for p in result.points], columns=list(POINT_FIELDS))


def check_logged(client: Client, job: Job, result: Any) -> None:
    """The job is a succeeded, imported sensitivity job holding exactly the analysis' points and skips."""
    assert isinstance(job, Job) and job.status == "succeeded" and job.kind == "sensitivity"
    assert job.spec["imported"] is True and job.spec["group"] == "filter" and job.spec["levels"] == [0.0, 0.5, 0.9]
    got = client.points(job)
    pd.testing.assert_frame_equal(got, expected_frame(result), check_dtype=False)
    skipped = client._json("GET", f"/jobs/{job.id}/skipped")  # the client has no method for this route
    assert skipped == [{"parameter": s.parameter, "reason": s.reason} for s in result.skipped]


def test_log_through_local_mode(trained_digits: Any, tmp_path: Path) -> None:
    result = digits_analysis(trained_digits)
    assert [s.parameter for s in result.skipped] == ["bn1.weight"] and len(result.points) == 6
    with Client.local(tmp_path / "local-data", progress=False) as local:
        experiment = local.create_experiment("notebook")
        job = local.log_sensitivity(result, model="digits-cnn", dataset="digits", experiment=experiment)
        check_logged(local, job, result)
        assert job.experiment_id == experiment.id
        # the same points as a list, and as the DataFrame points() gave: the same job again
        from_list = local.log_sensitivity(result.points, model="digits-cnn", dataset="digits", group="filter")
        from_frame = local.log_sensitivity(local.points(job), model="digits-cnn", dataset="digits")
        for other in (from_list, from_frame):
            pd.testing.assert_frame_equal(local.points(other), local.points(job))
        assert local.points_csv(from_frame) == local.points_csv(job)
        # plans work on it (digits-cnn is an architecture the server knows)
        assert "conv2.weight" in local.plan(job, max_drop=100)
        assert [j.id for j in local.jobs(experiment=experiment)] == [job.id]


@pytest.mark.slow
def test_log_through_a_server_compares_with_its_own_sweep(client: Client, trained: Job, tmp_path: Path) -> None:
    from pruning_core.checkpoint import load_model

    (checkpoint,) = [a for a in client.artifacts(trained) if a.kind == "checkpoint"]
    client.download(checkpoint, tmp_path / "digits.pt")
    result = digits_analysis(load_model(tmp_path / "digits.pt", "digits-cnn").eval())
    logged = client.log_sensitivity(result, model="digits-test", dataset="digits")
    check_logged(client, logged, result)
    served = client.sense("digits-test", "digits", **SWEEP)
    for metric in ("top1", "loss"):
        table = client.compare([served, logged], metric=metric)
        assert len(table) == len(result.points)
        pd.testing.assert_series_equal(table[f"job {served.id}"], table[f"job {logged.id}"], check_names=False,
                                       rtol=1e-6)
