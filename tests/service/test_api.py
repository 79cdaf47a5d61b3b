"""REST v1 on both databases: happy paths with rows made directly, and many bad requests -> 4xx."""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from api.jobs import POINTS_CACHE
from api.shared.settings import Settings
from api.store import repo
from api.store.models import Base
from tests.apps import RecordingDispatcher, make_app

GOOD_SENSE = {"model": "resnet20-cifar", "dataset": "synthetic", "levels": "0,0.5"}


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The shared ``client``, but on both stores (``settings`` follows ``db_url``)."""
    with TestClient(make_app(settings)) as c:
        yield c


def _counts(client: TestClient) -> dict[str, int]:
    factory = client.app.state.session_factory
    with factory() as s:
        return {t.name: s.scalar(select(func.count()).select_from(t)) for t in Base.metadata.sorted_tables}


def _points_job(client: TestClient, n_params: int = 2, levels=(0.0, 0.5)) -> int:
    with client.app.state.session_factory() as s:
        job = repo.create_job(s, kind="sensitivity", spec=dict(GOOD_SENSE), shards=1)
        s.commit()
        for i in range(n_params):
            for lv in levels:
                repo.upsert_point(s, job.id, {"parameter": f"l{i}.weight", "sparsity": lv, "top1": 90 - 10 * lv,
                                              "top5": 99.0, "loss": 0.1 + lv, "samples": 10, "nnz": 5},
                                  shard=0, worker="t", param_index=i)
        assert repo.claim_shard(s, job.id, 0, worker="t", stale_s=5)
        repo.finish_shard(s, job.id, 0, status="succeeded")
        return job.id


def test_job_lifecycle(client: TestClient) -> None:
    exp = client.post("/api/v1/experiments", json={"name": "e1", "tags": ["a"]}).json()
    r = client.post("/api/v1/jobs", json={"kind": "sensitivity", "spec": {**GOOD_SENSE, "shards": 3},
                                          "experiment_id": exp["id"]})
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["status"] == "queued" and job["spec"]["levels"] == [0.0, 0.5] and job["code_version"]
    assert client.app.state.dispatcher.sent == [(job["id"], 0), (job["id"], 1), (job["id"], 2)]
    page = client.get("/api/v1/jobs", params={"status": "queued", "kind": "sensitivity",
                                               "experiment": exp["id"], "limit": 1}).json()
    assert page["total"] == 1 and page["items"][0]["id"] == job["id"]
    assert len(client.get(f"/api/v1/jobs/{job['id']}").json()["shards"]) == 3
    assert client.get(f"/api/v1/experiments/{exp['id']}").json()["jobs"] == 1
    assert client.post(f"/api/v1/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
    assert client.delete(f"/api/v1/jobs/{job['id']}").status_code == 204
    assert client.get(f"/api/v1/jobs/{job['id']}").status_code == 404


def test_points_csv_compare_events(client: TestClient) -> None:
    a, b = _points_job(client), _points_job(client)
    points = client.get(f"/api/v1/jobs/{a}/points").json()
    assert [(p["parameter"], p["sparsity"]) for p in points][:2] == [("l0.weight", 0.0), ("l0.weight", 0.5)]
    csv = client.get(f"/api/v1/jobs/{a}/points.csv").text.splitlines()
    assert csv[0] == "parameter,sparsity,top1,top5,loss" and csv[1] == "l0.weight,0.0,90.0,99.0,0.1"
    rows = client.get("/api/v1/compare", params={"jobs": [a, b]}).json()["rows"]
    assert len(rows) == 4 and rows[0]["values"] == {str(a): 90.0, str(b): 90.0}
    body = client.get(f"/api/v1/jobs/{a}/events").text
    assert body.count("event: point") == 4 and "event: end" in body


def test_health_models_datasets(client: TestClient, settings) -> None:
    assert client.get("/healthz").json()["store"]["ok"]
    names = [d["name"] for d in client.get("/api/v1/datasets").json()]
    assert "digits" in names
    (settings.data_dir / "datasets" / "c10").mkdir(parents=True)
    r = client.post("/api/v1/datasets", json={"name": "mycifar", "kind": "cifar10", "root": "c10"})
    assert r.status_code == 201, r.text
    import torch  # only here: an upload must hold a real state_dict (issue 13)

    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buf)
    ck = buf.getvalue()
    r = client.post("/api/v1/models", data={"name": "up", "architecture": "digits-cnn"},
                    files={"checkpoint": ("up.pt", ck)})
    assert r.status_code == 201, r.text
    model = client.get("/api/v1/models/up").json()
    download = client.get(f"/api/v1/artifacts/{model['artifact_id']}/download")
    assert download.content == ck and download.headers["x-checksum-sha256"] == model["checkpoint_sha256"]


def _torch_like_checkpoint(payload: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", payload)
    return buf.getvalue()


class _Evil:
    def __reduce__(self):
        return (eval, ("1+1",))


def test_api_process_never_imports_torch(settings) -> None:
    """Build the app and serve requests in a clean interpreter; torch must stay unimported."""
    code = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from api.app import create_app\n"
        "from api.shared.settings import Settings\n"
        "from worker.executor import Executor\n"
        f"c = TestClient(create_app(Settings(data_dir={str(settings.data_dir)!r}), dispatcher=Executor))\n"
        "assert c.get('/api/v1/healthz').status_code == 200\n"
        "assert c.post('/api/v1/jobs', json={'kind': 'sensitivity', 'spec': "
        "{'model': 'resnet20-cifar', 'dataset': 'synthetic', 'levels': '0:2:1'}}).status_code == 422\n"
        "assert c.get('/api/v1/jobs').status_code == 200\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def _job(spec_changes: dict | None = None, drop: tuple = (), kind: str = "sensitivity", **top) -> dict:
    spec = {**GOOD_SENSE, **(spec_changes or {})}
    for key in drop:
        spec.pop(key)
    return {"kind": kind, "spec": spec, **top}


# (method, path, kwargs, expected status, a word the message must contain)
BAD_REQUESTS = [
    ("post", "/api/v1/jobs", {"json": _job({"levels": "0:1.5:0.5"})}, 422, "spec.levels"),
    ("post", "/api/v1/jobs", {"json": _job({"levels": "a,b"})}, 422, "spec.levels"),
    ("post", "/api/v1/jobs", {"json": _job({"levels": "0,0.5,0.5"})}, 422, "repeat"),
    ("post", "/api/v1/jobs", {"json": _job({"levels": "0:0.5:0"})}, 422, "step"),
    ("post", "/api/v1/jobs", {"json": _job({"levels": []})}, 422, "spec.levels"),
    ("post", "/api/v1/jobs", {"json": _job({"model": "resnet9000"})}, 422, "spec.model"),
    ("post", "/api/v1/jobs", {"json": _job({"model": "../etc/passwd"})}, 422, "spec.model"),
    ("post", "/api/v1/jobs", {"json": _job({"dataset": "imagenet-22k"})}, 422, "spec.dataset"),
    ("post", "/api/v1/jobs", {"json": _job({"dataset": "cifar10"})}, 422, "root"),
    ("post", "/api/v1/jobs", {"json": _job({"dataset": "cifar10", "dataset_options": {"root": "/etc"}})},
     422, "outside the dataset roots"),
    ("post", "/api/v1/jobs", {"json": _job({"dataset": "cifar10", "dataset_options": {"root": "../../.."}})},
     422, "outside the dataset roots"),
    ("post", "/api/v1/jobs", {"json": _job({"dataset_options": {"n": -5}})}, 422, "spec.dataset_options"),
    ("post", "/api/v1/jobs", {"json": _job({"group": "kernel"})}, 422, "spec.group"),
    ("post", "/api/v1/jobs", {"json": _job({"coupled": True})}, 422, "coupled"),
    ("post", "/api/v1/jobs", {"json": _job({"shards": 0})}, 422, "spec.shards"),
    ("post", "/api/v1/jobs", {"json": _job({"samples": 0})}, 422, "spec.samples"),
    ("post", "/api/v1/jobs", {"json": _job({"batch_size": 0})}, 422, "spec.batch_size"),
    ("post", "/api/v1/jobs", {"json": _job({"engine": "turbo"})}, 422, "spec.engine"),
    ("post", "/api/v1/jobs", {"json": _job({"device": "tpu"})}, 422, "spec.device"),
    ("post", "/api/v1/jobs", {"json": _job({"split": "validation"})}, 422, "spec.split"),
    ("post", "/api/v1/jobs", {"json": _job({"levelz": "0,1"})}, 422, "spec.levelz"),
    ("post", "/api/v1/jobs", {"json": _job(drop=("model",))}, 422, "spec.model"),
    ("post", "/api/v1/jobs", {"json": _job(drop=("dataset",))}, 422, "spec.dataset"),
    ("post", "/api/v1/jobs", {"json": _job(kind="quantize")}, 422, "kind"),
    ("post", "/api/v1/jobs", {"json": {"spec": GOOD_SENSE}}, 422, "kind"),
    ("post", "/api/v1/jobs", {"json": _job(experiment_id=999)}, 422, "experiment_id"),
    ("post", "/api/v1/jobs", {"json": _job(experiment_id=0)}, 422, "experiment_id"),
    ("post", "/api/v1/jobs", {"json": {"kind": "train", "spec": {**GOOD_SENSE, "epochs": 2}}}, 422, "spec.levels"),
    ("post", "/api/v1/jobs", {"json": {"kind": "train", "spec": {"model": "lenet5", "dataset": "digits",
                                                                  "epochs": 0}}}, 422, "spec.epochs"),
    ("post", "/api/v1/jobs", {"json": {"kind": "train", "spec": {"model": "lenet5", "dataset": "digits",
                                                                  "lr": -1}}}, 422, "spec.lr"),
    ("post", "/api/v1/jobs", {"json": {"kind": "prune", "spec": {"model": "lenet5", "dataset": "digits"}}},
     422, "spec.schedule"),
    ("post", "/api/v1/jobs", {"content": b"{not json", "headers": {"content-type": "application/json"}},
     422, "JSON"),
    ("get", "/api/v1/jobs", {"params": {"status": "done"}}, 422, "status"),
    ("get", "/api/v1/jobs", {"params": {"kind": "x"}}, 422, "kind"),
    ("get", "/api/v1/jobs", {"params": {"limit": 0}}, 422, "limit"),
    ("get", "/api/v1/jobs", {"params": {"offset": -1}}, 422, "offset"),
    ("get", "/api/v1/jobs/abc", {}, 422, "job_id"),
    ("get", "/api/v1/jobs/424242", {}, 404, "424242"),
    ("post", "/api/v1/jobs/424242/cancel", {}, 404, "424242"),
    ("delete", "/api/v1/jobs/424242", {}, 404, "424242"),
    ("get", "/api/v1/jobs/424242/points.csv", {}, 404, "424242"),
    ("get", "/api/v1/artifacts/424242/download", {}, 404, "424242"),
    ("get", "/api/v1/models/nope", {}, 404, "nope"),
    ("get", "/api/v1/datasets/nope", {}, 404, "nope"),
    ("post", "/api/v1/datasets", {"json": {"name": "d", "kind": "tiff"}}, 422, "kind"),
    ("post", "/api/v1/datasets", {"json": {"name": "d", "kind": "imagefolder"}}, 422, "root"),
    ("post", "/api/v1/datasets", {"json": {"name": "digits", "kind": "digits"}}, 409, "name"),
    ("post", "/api/v1/datasets", {"json": {"name": "d", "kind": "mnist", "root": "/"}}, 422, "root"),
    ("post", "/api/v1/experiments", {"json": {"name": ""}}, 422, "name"),
    ("post", "/api/v1/experiments", {"json": {"name": "ok", "tags": "notalist"}}, 422, "tags"),
    ("get", "/api/v1/compare", {"params": {"jobs": [1]}}, 422, "jobs"),
    ("get", "/api/v1/compare", {"params": {"jobs": [424242, 424243]}}, 404, "424242"),
    ("post", "/api/v1/plans", {"json": {"sensitivity_job": 424242, "max_drop": 1}}, 422, "sensitivity_job"),
    ("post", "/api/v1/plans", {"json": {"sensitivity_job": 1, "max_drop": -1}}, 422, "max_drop"),
    ("post", "/api/v1/plans", {"json": {"sensitivity_job": 1, "max_drop": 1, "metric": "top7"}}, 422, "metric"),
    ("post", "/api/v1/schedules/validate", {"json": {"yaml": ""}}, 422, "yaml"),
    ("post", "/api/v1/models", {"data": {"name": "m", "architecture": "digits-cnn"},
                                "files": {"checkpoint": ("m.pt", b"")}}, 422, "checkpoint"),
    ("post", "/api/v1/models", {"data": {"name": "m", "architecture": "digits-cnn"},
                                "files": {"checkpoint": ("m.pt", b"not a zip")}}, 422, "checkpoint"),
    ("post", "/api/v1/models", {"data": {"name": "m", "architecture": "digits-cnn"},
                                "files": {"checkpoint": ("m.pt", _torch_like_checkpoint(pickle.dumps(_Evil())))}},
     422, "builtins.eval"),
    ("post", "/api/v1/models", {"data": {"name": "m", "architecture": "gpt-5"},
                                "files": {"checkpoint": ("m.pt", b"x")}}, 422, "architecture"),
    ("post", "/api/v1/models", {"data": {"name": "m"}, "files": {"checkpoint": ("m.pt", b"x")}},
     422, "architecture"),
    ("post", "/api/v1/models", {"data": {"name": "m", "architecture": "digits-cnn"},
                                "files": {"checkpoint": ("m.pt", b"x" * 3 * 1024 * 1024)}}, 413, "upload limit"),
]


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "word"), BAD_REQUESTS,
                         ids=[f"{i:02d}-{r[4]}" for i, r in enumerate(BAD_REQUESTS)])
def test_bad_request(client: TestClient, method: str, path: str, kwargs: dict, status: int, word: str) -> None:
    client.app.state.settings.max_upload_mb = 2
    before = _counts(client)
    r = client.request(method.upper(), path, **kwargs)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and word.lower() in detail.lower(), detail
    assert _counts(client) == before
    assert client.app.state.dispatcher.sent == []


def test_token_required(settings) -> None:
    settings.token = "s3cret"
    with TestClient(create_app(settings, dispatcher=RecordingDispatcher())) as c:
        assert c.get("/api/v1/jobs").status_code == 401
        assert c.get("/api/v1/jobs", headers={"Authorization": "Bearer s3cret"}).status_code == 200


CLI_PARITY = [
    ("train", {"model": "lenet5", "dataset": "digits", "optimizer": "adamw", "momentum": 0.8,
               "weight_decay": 5e-4, "seed": 3}),
    ("sensitivity", {**GOOD_SENSE, "group": "filter", "seed": 7, "samples": 64, "early_stop": 20.0, "amp": True,
                     "coupled": True, "latency": True}),
    ("prune", {"model": "lenet5", "dataset": "digits", "schedule": "version: 1\npruners: {}\npolicies: []\n",
               "optimizer": "adam", "momentum": 0.5, "weight_decay": 0.0, "seed": 2, "latency_batch": 4,
               "start_epoch": 3, "thin": True}),
]


@pytest.mark.parametrize(("kind", "spec"), CLI_PARITY, ids=[k for k, _ in CLI_PARITY])
def test_cli_options_are_accepted_and_stored(client: TestClient, kind: str, spec: dict) -> None:
    """Every option of ``prunescope train/sense/prune`` has a spec field, kept as given for the runner."""
    r = client.post("/api/v1/jobs", json={"kind": kind, "spec": spec})
    assert r.status_code == 201, r.text
    stored = r.json()["spec"]
    assert {k: stored[k] for k in spec if k != "levels"} == {k: v for k, v in spec.items() if k != "levels"}


PARITY_BAD = [
    ("train", {"momentum": 1.5}, "spec.momentum"),
    ("train", {"weight_decay": -1}, "spec.weight_decay"),
    ("train", {"optimizer": "lbfgs"}, "spec.optimizer"),
    ("sensitivity", {"seed": -1}, "spec.seed"),
    ("sensitivity", {"early_stop": 101}, "spec.early_stop"),
    ("sensitivity", {"amp": "maybe"}, "spec.amp"),
    ("sensitivity", {"latency": True}, "latency"),  # element group: nothing to thin
    ("prune", {"optimizer": "rmsprop"}, "spec.optimizer"),
    ("prune", {"momentum": -0.1}, "spec.momentum"),
    ("prune", {"seed": -3}, "spec.seed"),
    ("prune", {"latency_batch": 0}, "spec.latency_batch"),
    ("prune", {"start_epoch": -1}, "spec.start_epoch"),
]


@pytest.mark.parametrize(("kind", "change", "word"), PARITY_BAD, ids=[w for _, _, w in PARITY_BAD])
def test_bad_cli_options_name_the_field(client: TestClient, kind: str, change: dict, word: str) -> None:
    base = {"train": CLI_PARITY[0][1], "sensitivity": GOOD_SENSE, "prune": CLI_PARITY[2][1]}[kind]
    r = client.post("/api/v1/jobs", json={"kind": kind, "spec": {**base, **change}})
    assert r.status_code == 422 and word in r.json()["detail"], r.text
    assert client.app.state.dispatcher.sent == []


@pytest.mark.parametrize("body", [
    {"sensitivity_job": 1},                                           # neither goal
    {"sensitivity_job": 1, "max_drop": 1, "target_sparsity": 0.5},    # both
    {"sensitivity_job": 1, "target_sparsity": 1.0},                   # not a fraction below 1
    {"sensitivity_job": 1, "max_drop": 1, "epochs": 2},               # AGP needs 3 epochs
    {"sensitivity_job": 1, "max_drop": 1, "one_shot": "twice"},
])
def test_bad_plans_name_the_field(client: TestClient, body: dict) -> None:
    for path in ("/api/v1/plans", "/api/v1/plans/launch"):
        r = client.post(path, json={**body, **({"thin": True} if path.endswith("launch") else {})})
        assert r.status_code == 422, r.text
        assert any(w in r.json()["detail"] for w in ("max_drop", "target_sparsity", "epochs", "one_shot")), r.text


def test_points_follow_the_model_order_then_sparsity(client: TestClient) -> None:
    """Rows come back by named_parameters position (not by name, not by insertion), then sparsity, in
    JSON and CSV alike; a row without a position goes last."""
    with client.app.state.session_factory() as s:
        job = repo.create_job(s, kind="sensitivity", spec=dict(GOOD_SENSE), shards=1)
        s.commit()
        for name, index in (("z.weight", None), ("fc.weight", 2), ("conv2.weight", 1), ("conv1.weight", 0)):
            for lv in (0.9, 0.0, 0.5):
                repo.upsert_point(s, job.id, {"parameter": name, "sparsity": lv, "top1": 50.0, "top5": 90.0,
                                              "loss": 1.0, "latency_ms": 0.25}, shard=0, worker="t", param_index=index)
        s.commit()
    expected = [(n, lv) for n in ("conv1.weight", "conv2.weight", "fc.weight", "z.weight") for lv in (0.0, 0.5, 0.9)]
    points = client.get(f"/api/v1/jobs/{job.id}/points").json()
    assert [(p["parameter"], p["sparsity"]) for p in points] == expected
    assert points[0]["latency_ms"] == 0.25
    rows = client.get(f"/api/v1/jobs/{job.id}/points.csv").text.splitlines()[1:]
    assert [(r.split(",")[0], float(r.split(",")[1])) for r in rows] == expected


def test_unmeasured_points_are_stored(client: TestClient) -> None:
    """An early stop records the higher levels with null metrics (migration 0003)."""
    job_id = _points_job(client, n_params=1, levels=(0.0,))
    with client.app.state.session_factory() as s:
        repo.upsert_point(s, job_id, {"parameter": "l0.weight", "sparsity": 0.9, "top1": None, "top5": None,
                                      "loss": None, "measured": False}, shard=0, worker="t", param_index=0)
        s.commit()
    POINTS_CACHE.drop(client.app.state.settings.db_url, job_id)
    last = client.get(f"/api/v1/jobs/{job_id}/points").json()[-1]
    assert last["measured"] is False and last["top1"] is None


def _sse_events(text: str) -> list[tuple[str, dict]]:
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        if lines:
            out.append((lines["event"], json.loads(lines["data"])))
    return out


def test_list_event_stream_reports_changes_of_matching_jobs(client: TestClient) -> None:
    """``GET /jobs/events``: a snapshot of active jobs, then every progress/status change and new job,
    filtered by kind; the store is changed from another thread while the stream runs."""
    factory = client.app.state.session_factory
    with factory() as s:
        running = repo.create_job(s, kind="sensitivity", spec=dict(GOOD_SENSE))
        done = repo.create_job(s, kind="sensitivity", spec=dict(GOOD_SENSE))
        other = repo.create_job(s, kind="train", spec={})
        s.commit()
        running_id, done_id, other_id = running.id, done.id, other.id
        assert repo.claim_shard(s, done_id, 0, worker="t", stale_s=5)
        repo.finish_shard(s, done_id, 0, status="succeeded")

    def change() -> None:
        with factory() as s:
            repo.set_progress(s, running_id, done=3, total=8)
            repo.set_progress(s, other_id, done=1, total=2)
            s.commit()
            time.sleep(0.3)
            job = repo.create_job(s, kind="sensitivity", spec=dict(GOOD_SENSE))
            s.commit()
            created.append(job.id)

    created: list[int] = []
    timer = threading.Timer(0.3, change)
    timer.start()
    r = client.get("/api/v1/jobs/events", params={"kind": "sensitivity", "poll_s": 0.05, "max_s": 1.2})
    timer.join()
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = _sse_events(r.text)
    jobs = [data for name, data in events if name == "job"]
    assert jobs[0]["id"] == running_id and jobs[0]["progress_done"] == 0  # the snapshot: active jobs only
    assert {"id": running_id, "progress_done": 3, "progress_total": 8} in [
        {k: j[k] for k in ("id", "progress_done", "progress_total")} for j in jobs]
    assert created and created[0] in [j["id"] for j in jobs]
    assert done_id not in [j["id"] for j in jobs] and other_id not in [j["id"] for j in jobs]
    assert events[-1] == ("end", {"reason": "max_s"})
    assert client.get("/api/v1/jobs/events", params={"status": "done"}).status_code == 422


def test_job_events_without_points(client: TestClient) -> None:
    job_id = _points_job(client)
    names = [name for name, _ in _sse_events(client.get(f"/api/v1/jobs/{job_id}/events?points=false").text)]
    assert names == ["progress", "end"]


def test_documented_etag_and_gzip_exchange(client: TestClient) -> None:
    """The curl session of docs/rest.md (points with gzip, then a 304 on the ETag), through httpx."""
    job_id = _points_job(client)
    first = client.get(f"/api/v1/jobs/{job_id}/points", headers={"Accept-Encoding": "gzip"})
    assert first.headers["content-encoding"] == "gzip" and first.headers["vary"] == "Accept-Encoding"
    again = client.get(f"/api/v1/jobs/{job_id}/points", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    csv = client.get(f"/api/v1/jobs/{job_id}/points.csv", headers={"Accept-Encoding": "gzip"})
    assert csv.headers["etag"] != first.headers["etag"] and csv.text.startswith("parameter,sparsity,")


def test_documented_curl_bodies_are_accepted(client: TestClient) -> None:
    """Each ``curl -X POST … /jobs -d '{…}'`` of docs/rest.md, sent through httpx, creates its job."""
    import re
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "rest.md").read_text()
    bodies = re.findall(r"curl -s -X POST \S+/api/v1/jobs .*?-d '(.*?)'", doc, flags=re.S)
    assert bodies, "docs/rest.md lost its POST /jobs example"
    for body in bodies:
        r = client.post("/api/v1/jobs", json=json.loads(body))
        assert r.status_code == 201, r.text


def test_validation_answers_the_schedules_warnings(client: TestClient) -> None:
    """A key given twice with the same value is valid, and the REST answer says so with both lines."""
    text = ("version: 1\npruners:\n  p:\n    class: SparsityLevelParameterPruner\n"
            "    levels: {conv1.weight: 0.5}\n    levels: {conv1.weight: 0.5}\n"
            "policies:\n  - pruner: {instance_name: p}\n    epochs: [0]\n")
    answer = client.post("/api/v1/schedules/validate", json={"yaml": text}).json()
    assert answer["valid"] is True
    assert len(answer["warnings"]) == 1 and "lines 5 and 6" in answer["warnings"][0]
    clash = text.replace("    levels: {conv1.weight: 0.5}\npolicies", "    levels: {conv1.weight: 0.6}\npolicies")
    answer = client.post("/api/v1/schedules/validate", json={"yaml": clash}).json()
    assert answer["valid"] is False and "line 5" in answer["error"] and "line 6" in answer["error"]


def test_an_out_of_scope_distiller_architecture_says_why(client: TestClient) -> None:
    spec = {"model": "maskrcnn_resnet50_fpn", "dataset": "synthetic"}
    answer = client.post("/api/v1/jobs", json={"kind": "sensitivity", "spec": spec})
    assert answer.status_code == 422
    assert "not supported" in answer.text and "object detection" in answer.text


def test_two_apps_in_one_process_serve_their_own_points(tmp_path) -> None:
    """The points cache is keyed by store: job 1 of one store is never served from another's (two local
    clients, or two test apps, in one process)."""
    from tests.apps import sqlite_settings_in

    apps = [TestClient(make_app(sqlite_settings_in(tmp_path / name))) for name in ("a", "b")]
    with apps[0] as a, apps[1] as b:
        first, second = _points_job(a, n_params=1), _points_job(b, n_params=3)
        assert first == second  # the same id in each store
        assert len(a.get(f"/api/v1/jobs/{first}/points").json()) == 2
        assert len(b.get(f"/api/v1/jobs/{second}/points").json()) == 6
        assert len(a.get(f"/api/v1/jobs/{first}/points").json()) == 2  # from the cache now


def test_a_single_valued_query_parameter_given_twice_is_a_422(client: TestClient) -> None:
    """``?q=a&q=b`` would silently keep the last value; a list (``/compare?jobs=…&jobs=…``) may repeat."""
    for query, name in (("q=a&q=b", "q"), ("status=queued&status=running", "status"), ("limit=5&limit=6", "limit")):
        answer = client.get(f"/api/v1/jobs?{query}")
        assert answer.status_code == 422 and f"{name} (query): given 2 times" in answer.json()["detail"], query
    assert client.get("/api/v1/jobs?q=a&limit=5").status_code == 200
    assert client.get("/api/v1/compare?jobs=424242&jobs=424243").status_code == 404  # repeated, and looked up
