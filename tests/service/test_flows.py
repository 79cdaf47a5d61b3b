"""Every job kind end to end through REST v1 with the real embedded executor (SQLite, digits, tiny):
train -> registered model and a downloadable checkpoint; sensitivity -> the same points and skipped
parameters as the CLI/library path; prune with a schedule; plan -> launch."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.shared.settings import Settings
from tests.service.flow import download, finished, submit
from worker.executor import Executor

pytestmark = pytest.mark.slow
MODEL = "digits-flow"
PARAMS = ["conv1.weight", "bn1.weight", "conv3.weight", "fc.*"]  # bn1.weight and fc.bias are skipped
LEVELS = [0.0, 0.5, 0.9]
SCHEDULE = """version: 1
pruners:
  conv:
    class: SparsityLevelParameterPruner
    levels: {conv2.weight: 0.6, conv3.weight: 0.5}
policies:
  - pruner: {instance_name: conv}
    epochs: [0]
"""


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    data = tmp_path_factory.mktemp("flows")
    settings = Settings(data_dir=data, database_url=f"sqlite:///{data / 'store.db'}", heartbeat_stale_s=10,
                        torch_threads=1)
    with TestClient(create_app(settings, dispatcher=Executor), base_url="http://testserver/api/v1") as client:
        yield client


@pytest.fixture(scope="module")
def trained(api: TestClient) -> dict:
    job_id = submit(api, "train", model="digits-cnn", dataset="digits", epochs=3, batch_size=128, lr=0.1,
                    register_as=MODEL)
    return finished(api, job_id)


@pytest.fixture(scope="module")
def sensed(api: TestClient, trained: dict) -> dict:
    job_id = submit(api, "sensitivity", model=MODEL, dataset="digits", levels=LEVELS, params=PARAMS, shards=2)
    return finished(api, job_id)


def test_train_job_registers_a_model_with_its_checkpoint(api: TestClient, trained: dict, tmp_path: Path) -> None:
    from pruning_core.checkpoint import load_checkpoint

    epochs = api.get(f"/jobs/{trained['id']}/epochs").json()
    assert [e["epoch"] for e in epochs] == [1, 2, 3] and all(e["top1"] is not None for e in epochs)
    assert trained["progress_done"] == trained["progress_total"] == 3
    model = next(m for m in api.get("/models").json() if m["name"] == MODEL)
    assert model["source_job_id"] == trained["id"] and model["metrics"]["top1"] > 80
    assert trained["result"]["final"]["top1"] == model["metrics"]["top1"]
    [artifact] = api.get(f"/jobs/{trained['id']}/artifacts").json()
    assert artifact["id"] == model["artifact_id"] == trained["result"]["checkpoint_artifact"]
    checkpoint = load_checkpoint(download(api, artifact, tmp_path))
    assert checkpoint.arch == "digits-cnn"


def test_sensitivity_matches_the_cli_and_reports_skipped(
    api: TestClient, trained: dict, sensed: dict, tmp_path: Path
) -> None:
    from api.cli import main

    [artifact] = api.get(f"/jobs/{trained['id']}/artifacts").json()
    checkpoint = download(api, artifact, tmp_path)
    out = tmp_path / "cli.json"
    assert main(["sense", "--model", "digits-cnn", "--checkpoint", str(checkpoint), "--dataset", "digits",
                 "--levels", ",".join(map(str, LEVELS)), "--params", *PARAMS, "--json", str(out)]) == 0
    cli = json.loads(out.read_text())
    served = api.get(f"/jobs/{sensed['id']}/points").json()
    fields = ("parameter", "sparsity", "top1", "top5", "loss", "nnz", "samples")
    assert [tuple(p[f] for f in fields) for p in served] == [tuple(p[f] for f in fields) for p in cli["points"]]
    assert len(served) == 3 * len(LEVELS)
    expected = [{"parameter": s["parameter"], "reason": s["reason"]} for s in cli["skipped"]]
    assert {s["parameter"] for s in expected} == {"bn1.weight", "fc.bias"}
    assert api.get(f"/jobs/{sensed['id']}/skipped").json() == expected == sensed["result"]["skipped"]
    assert api.get(f"/jobs/{trained['id']}/skipped").status_code == 409


def test_points_of_a_finished_job_are_cached_with_etag_and_gzip(api: TestClient, sensed: dict) -> None:
    url = f"/jobs/{sensed['id']}/points"
    first = api.get(url, headers={"Accept-Encoding": "gzip"})
    assert first.headers["content-encoding"] == "gzip" and first.headers["etag"]
    plain = api.get(url, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.json() == first.json()
    assert api.get(url, headers={"If-None-Match": first.headers["etag"]}).status_code == 304
    one = api.get(url, params={"parameter": "fc.weight"}).json()
    assert {p["parameter"] for p in one} == {"fc.weight"} and len(one) == len(LEVELS)
    assert api.get(f"/jobs/{sensed['id']}/points.csv").text.splitlines()[0] == "parameter,sparsity,top1,top5,loss"


def test_prune_job_stores_epochs_and_a_pruned_checkpoint(api: TestClient, trained: dict, tmp_path: Path) -> None:
    from pruning_core.checkpoint import load_checkpoint

    job_id = submit(api, "prune", model=MODEL, dataset="digits", schedule=SCHEDULE, epochs=2, lr=0.01,
                    batch_size=128, register_as="digits-flow-pruned")
    job = finished(api, job_id)
    epochs = api.get(f"/jobs/{job_id}/epochs").json()
    assert [e["epoch"] for e in epochs] == [0, 1] and all(e["sparsity"] > 0.3 for e in epochs)
    assert job["result"]["final"]["top1"] > 50 and job["result"]["baseline"]["top1"] > 50
    artifacts = {a["kind"]: a for a in api.get(f"/jobs/{job_id}/artifacts").json()}
    assert set(artifacts) == {"schedule", "report", "checkpoint"}
    checkpoint = load_checkpoint(download(api, artifacts["checkpoint"], tmp_path))
    conv2 = checkpoint.state_dict["conv2.weight"]
    assert (conv2 == 0).sum().item() == int(0.6 * conv2.numel())
    assert download(api, artifacts["schedule"], tmp_path).read_text() == SCHEDULE


def test_plan_then_launch_runs_the_schedule(api: TestClient, sensed: dict) -> None:
    r = api.post("/plans", json={"sensitivity_job": sensed["id"], "max_drop": 2.0, "epochs": 3})
    assert r.status_code == 200, r.text
    assert "AutomatedGradualPruner" in r.json()["yaml"]
    r = api.post("/plans/launch", json={"sensitivity_job": sensed["id"], "max_drop": 2.0, "epochs": 3,
                                        "register_as": "digits-flow-planned"})
    assert r.status_code == 201, r.text
    launched = r.json()
    assert launched["kind"] == "prune" and launched["spec"]["model"] == MODEL
    job = finished(api, launched["id"])
    assert len(api.get(f"/jobs/{job['id']}/epochs").json()) == 3
    assert job["result"]["sparsity"] > 0


@pytest.fixture(scope="module")
def filter_sweep(api: TestClient, trained: dict) -> dict:
    """A filter sweep with the CLI's extra options; params listed out of model order on purpose."""
    job_id = submit(api, "sensitivity", model=MODEL, dataset="digits", group="filter", levels=[0.0, 0.25, 0.5, 0.75],
                    params=["fc.weight", "conv2.weight", "conv1.weight"], samples=200, seed=5, early_stop=60.0,
                    latency=True, coupled=True, shards=2)
    return finished(api, job_id, timeout=120)


def test_sensitivity_options_reach_the_engine(api: TestClient, filter_sweep: dict) -> None:
    points = api.get(f"/jobs/{filter_sweep['id']}/points").json()
    names = [p["parameter"] for p in points]
    assert list(dict.fromkeys(names)) == ["conv1.weight", "conv2.weight"]  # model order; fc: skipped (filter)
    assert all(p["samples"] == 200 and p["subset"] and p["mode"] == "coupled" for p in points if p["measured"])
    assert all(p["latency_ms"] > 0 for p in points if p["measured"])
    low = [p for p in points if p["measured"] and p["top1"] < 60.0]
    for p in low:  # early stop: every higher level of that parameter is recorded, unmeasured
        later = [q for q in points if q["parameter"] == p["parameter"] and q["sparsity"] > p["sparsity"]]
        assert all(not q["measured"] and q["top1"] is None for q in later)


def test_target_sparsity_plan_launches_a_thinning_prune_job(api: TestClient, filter_sweep: dict) -> None:
    plan = api.post("/plans", json={"sensitivity_job": filter_sweep["id"], "target_sparsity": 0.1, "epochs": 2,
                                    "one_shot": True, "metric": "loss"}).json()
    assert "overall_sparsity" in plan, plan
    assert plan["overall_sparsity"] >= 0.1 and "L1RankedStructureParameterPruner" in plan["yaml"], plan
    r = api.post("/plans/launch", json={"sensitivity_job": filter_sweep["id"], "target_sparsity": 0.1,
                                        "epochs": 2, "one_shot": True, "metric": "loss", "thin": True})
    assert r.status_code == 201, r.text
    spec = r.json()["spec"]
    assert spec["thin"] is True and spec["seed"] == 0 and "samples" not in spec  # the sweep's own stay behind
    job = finished(api, r.json()["id"], timeout=120)
    thinning = job["result"]["thinning"]
    assert thinning["after"]["params"] < thinning["before"]["params"] and thinning["after"]["latency_ms"] > 0


def test_prune_options_reach_the_engine(api: TestClient, trained: dict) -> None:
    job_id = submit(api, "prune", model=MODEL, dataset="digits", schedule=SCHEDULE, epochs=1, lr=0.001,
                    optimizer="adam", momentum=0.0, weight_decay=0.0, seed=4, start_epoch=1, batch_size=128)
    job = finished(api, job_id)
    assert [e["epoch"] for e in api.get(f"/jobs/{job_id}/epochs").json()] == [1]  # epoch 0 replayed, untrained
    assert job["result"]["sparsity"] > 0.3
