"""Every client method against a live ``prunescope serve`` (tiny jobs: digits, a few levels, one or two layers)."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pandas as pd
import pytest

from api.client import POINT_COLUMNS, Artifact, Client, Job, JobFailed, PrunescopeError

pytestmark = pytest.mark.slow

SCHEDULE = """version: 1
pruners:
  fc:
    class: AutomatedGradualPruner
    initial_sparsity: 0.05
    final_sparsity: 0.5
    weights: [fc.weight]
policies:
  - pruner: {instance_name: fc}
    starting_epoch: 0
    ending_epoch: 2
    frequency: 1
"""


@pytest.fixture(scope="module")
def sweep(client: Client, trained: Job) -> Job:
    return client.sense("digits-test", "digits", levels="0,0.5,0.9", params=["conv3.weight", "fc.weight"])


def test_health(client: Client) -> None:
    health = client.health()
    assert health["ok"] and health["broker"]["kind"] == "embedded"


def test_api_errors_raise_with_the_server_message(client: Client) -> None:
    with pytest.raises(PrunescopeError, match="unknown model 'no-such-net'") as info:
        client.sense("no-such-net", "digits", wait=False)
    assert info.value.status == 422
    with pytest.raises(PrunescopeError, match="job 999999 does not exist") as info:
        client.job(999999)
    assert info.value.status == 404
    with pytest.raises(PrunescopeError, match="spec.levels"):
        client.sense("digits-cnn", "digits", levels="0:1:x", wait=False)


def test_train_registers_a_model_with_epochs_and_a_checkpoint(client: Client, trained: Job, tmp_path: Path) -> None:
    assert trained.status == "succeeded" and trained.kind == "train"
    epochs = client.epochs(trained)
    assert list(epochs["epoch"]) == [1, 2] and epochs["top1"].notna().all()
    assert trained.epochs().equals(epochs)
    model = client.model("digits-test")
    assert model.architecture == "digits-cnn" and model.source_job_id == trained.id
    assert client.job_model(trained) == trained.model() == model
    assert "digits-test" in [m.name for m in client.models()]
    (checkpoint,) = [a for a in client.artifacts(trained) if a.kind == "checkpoint"]
    assert client.artifact(checkpoint.id) == checkpoint
    data = client.download(checkpoint, tmp_path)
    assert hashlib.sha256(data).hexdigest() == checkpoint.sha256 == model.checkpoint_sha256
    assert (tmp_path / checkpoint.name).read_bytes() == data


def test_sweep_points_csv_plot_and_events(client: Client, sweep: Job, tmp_path: Path) -> None:
    points = client.points(sweep)
    assert list(points.columns) == list(POINT_COLUMNS)
    assert list(zip(points.parameter, points.sparsity, strict=True)) == [
        (p, s) for p in ("conv3.weight", "fc.weight") for s in (0.0, 0.5, 0.9)]
    assert client.points(sweep, parameter="fc.weight")["parameter"].unique().tolist() == ["fc.weight"]
    csv = client.points_csv(sweep, tmp_path / "s.csv")
    assert csv.splitlines()[0] == "parameter,sparsity,top1,top5,loss" and len(csv.splitlines()) == 7
    assert (tmp_path / "s.csv").read_text() == csv
    fig = client.plot(sweep, "top5")
    bands, lines = fig.data[:2], fig.data[2:]  # bands first, beneath the lines, as on the dashboard
    assert [t.name for t in lines] == ["conv3.weight", "fc.weight"] and all(b.fill == "toself" for b in bands)
    assert list(lines[1].x) == [0.0, 0.5, 0.9] and list(lines[1].y) == points.top5.tolist()[3:]
    assert len(client.plot(points, "loss").data) == 2  # no band for loss
    events = list(client.events(sweep))
    assert [e.event for e in events][-1] == "end" and events[-1].data["status"] == "succeeded"
    assert sum(e.event == "point" for e in events) == 6


def test_upload_from_module_and_path_and_checkpoint_argument(client: Client, tmp_path: Path) -> None:
    import torch

    from pruning_core.models import create_model

    torch.manual_seed(0)
    net = create_model("digits-cnn")
    model = client.upload_model("digits-module", net, "digits-cnn")
    assert model.validation == "valid" and model.architecture == "digits-cnn"
    path = tmp_path / "net.pt"
    torch.save(net.state_dict(), path)
    assert client.upload_model("digits-path", path, "digits-cnn").checkpoint_sha256
    with pytest.raises(PrunescopeError, match="already registered") as info:
        client.upload_model("digits-module", net, "digits-cnn")
    assert info.value.status == 409
    # the CLI's --checkpoint: uploaded once per content, then reused by name
    job = client.sense("digits-cnn", "digits", checkpoint=net, levels="0", params=["fc.weight"])
    again = client.ensure_model(net, "digits-cnn")
    assert job.spec["model"] == again.name == model.name


def test_compare_plan_launch_and_prune(client: Client, sweep: Job, trained: Job) -> None:
    other = client.sense("digits-test", "digits", levels="0,0.5", params=["fc.weight"])
    table = client.compare([sweep, other])
    assert list(table.columns) == ["parameter", "sparsity", f"job {sweep.id}", f"job {other.id}"]
    assert table[f"job {other.id}"].isna().sum() == 4  # conv3.weight and 0.9 only in the first sweep
    yaml_text = client.plan(sweep, max_drop=5.0, epochs=3)
    assert yaml_text.startswith("version: 1") and "AutomatedGradualPruner" in yaml_text
    assert client.validate_schedule(yaml_text).valid
    bad = client.validate_schedule("version: 1\nprunerz: {}\n")
    assert not bad.valid and bad.key == "prunerz" and bad.line == 2
    launched = client.launch_plan(sweep, max_drop=5.0, epochs=3, register_as="digits-planned")
    assert launched.kind == "prune" and launched.status == "succeeded"
    pruned = client.prune("digits-test", "digits", SCHEDULE, epochs=3, register_as="digits-pruned")
    epochs = pruned.epochs()
    assert len(epochs) == 3 and epochs["sparsity"].iloc[-1] > 0
    kinds = {a.kind for a in pruned.artifacts()}
    assert {"checkpoint", "schedule", "report"} <= kinds
    assert all(isinstance(a, Artifact) for a in pruned.artifacts())
    assert client.model("digits-pruned").metrics["sparsity"] > 0
    with pytest.raises(PrunescopeError, match="has registered no model"):
        client.job_model(sweep)


def test_jobs_listing_cancel_and_delete(client: Client, trained: Job) -> None:
    job = client.sense("digits-test", "digits", levels="0:0.95:0.05", wait=False)
    cancelled = client.cancel(job)
    assert cancelled.cancel_requested
    with pytest.raises(JobFailed, match="cancelled") as info:
        client.wait(job, timeout=60)
    assert info.value.job.status == "cancelled"
    with pytest.raises(PrunescopeError, match="already cancelled") as err:
        client.cancel(job)
    assert err.value.status == 409
    listed = client.jobs(kind="sensitivity", status="cancelled")
    assert job.id in [j.id for j in listed] and all(j.kind == "sensitivity" for j in listed)
    assert client.jobs(limit=1)[0].id >= job.id
    client.delete(job)
    with pytest.raises(PrunescopeError, match="does not exist"):
        job.refresh()


def test_wait_timeout_and_failed_job(client: Client, trained: Job) -> None:
    job = client.train("digits-cnn", "digits", epochs=50, wait=False)
    with pytest.raises(TimeoutError, match=f"job {job.id} is still"):
        client.wait(job, timeout=0.1, poll=0.05)
    client.cancel(job)
    assert client.wait(job, raise_on_failure=False).status == "cancelled"
    # synthetic data with the wrong shape for the model fails in the runner: the job's error comes back
    failing = client.sense("digits-cnn", "synthetic", dataset_options=["shape=3x4x4", "n=8"], levels="0", wait=False)
    with pytest.raises(JobFailed) as info:
        failing.wait()
    assert info.value.job.status == "failed" and info.value.job.error in info.value.message


def test_datasets_and_experiments(client: Client, trained: Job) -> None:
    names = [d.name for d in client.datasets()]
    assert {"digits", "synthetic"} <= set(names)
    assert client.dataset("digits").builtin
    small = client.register_dataset("tiny-synthetic", "synthetic", options=["n=16", "shape=1x8x8", "classes=10"])
    assert small.options == {"n": 16, "shape": "1x8x8", "classes": 10} and not small.builtin
    assert client.dataset("tiny-synthetic") == small
    with pytest.raises(PrunescopeError, match="neither built in nor registered"):
        client.dataset("nope")
    exp = client.create_experiment("client-tests", "from the client suite", tags=["ci"])
    job = client.sense("digits-test", "tiny-synthetic", levels="0", params=["fc.weight"], experiment=exp)
    assert job.experiment_id == exp.id
    assert client.experiment(exp.id).jobs == 1
    assert [e.name for e in client.experiments(tag="ci")] == ["client-tests"]
    assert [j.id for j in client.jobs(experiment=exp)] == [job.id]


def test_points_frame_round_trips_the_csv(client: Client, sweep: Job, tmp_path: Path) -> None:
    frame = pd.read_csv(pd.io.common.StringIO(client.points_csv(sweep)))
    expected = client.points(sweep)[["parameter", "sparsity", "top1", "top5", "loss"]]
    pd.testing.assert_frame_equal(frame, expected, check_dtype=False, check_exact=True)


def test_structured_and_element_sweeps_share_the_unpruned_point(client: Client, sweep: Job) -> None:
    filters = client.sense("digits-test", "digits", group="filter", levels="0", params=["conv3.weight"])
    element = client.points(sweep, parameter="conv3.weight")
    assert client.points(filters).top1[0] == element.top1[0]


def test_list_stream_follows_a_job_to_its_end(client: Client, trained: Job) -> None:
    """``job_events`` sees a new job appear and finish; ``events(points=False)`` then carries no points."""
    created: list[Job] = []
    # submitted once the stream is open, so it is seen as new (a job done before the connection is not news)
    submit = threading.Timer(1.0, lambda: created.append(
        client.sense("digits-test", "digits", levels="0,0.5", params=["fc.weight"], wait=False)))
    submit.start()
    statuses = []
    for event in client.job_events(kind="sensitivity", poll=0.1, max_s=60):
        assert event.event != "end", f"the job did not finish within the stream: {statuses}"
        if event.event == "job" and created and event.data["id"] == created[0].id:
            statuses.append(event.data["status"])
            if event.data["status"] == "succeeded":
                break  # leaving the loop closes the connection
    submit.join()
    assert statuses[-1] == "succeeded"
    assert {e.event for e in client.events(created[0], points=False)} == {"progress", "end"}
