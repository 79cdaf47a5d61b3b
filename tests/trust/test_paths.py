"""Paths never escape their roots (datasets, artifacts) and uploads are limited while they stream."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.security import BODY_SLACK_BYTES, BodyLimit
from api.shared.settings import Settings
from api.store import repo

OUTSIDE_ROOTS = ["../../etc", "/etc", "datasets/../../..", "%2e%2e/%2e%2e/etc", "..%2f..%2fetc", "~root",
                 "~no-such-user-xyz", "a\x00b", "escape-link", "loop-link"]


@pytest.fixture
def roots(client: TestClient, tmp_path: Path) -> Path:
    root = client.app.state.settings.data_dir / "datasets"
    (root / "ok").mkdir(parents=True)
    os.symlink("/etc", root / "escape-link")
    os.symlink(root / "loop-link", root / "loop-link")
    return root


@pytest.mark.parametrize("given", OUTSIDE_ROOTS)
def test_dataset_roots_stay_inside(client: TestClient, roots: Path, given: str) -> None:
    r = client.post("/api/v1/datasets", json={"name": "d", "kind": "imagefolder", "root": given})
    if r.status_code == 201:  # a literal name such as '%2e%2e' is a harmless folder under the root
        assert Path(r.json()["root"]).is_relative_to(roots.resolve()), r.json()
    else:
        assert r.status_code == 422 and r.json()["detail"].startswith("root: "), r.text
    job = client.post("/api/v1/jobs", json={"kind": "sensitivity", "spec": {
        "model": "digits-cnn", "dataset": "imagefolder", "levels": "0,0.5", "dataset_options": {"root": given}}})
    assert job.status_code in (201, 422), job.text
    if job.status_code == 422:
        assert "dataset_options.root" in job.json()["detail"]
    assert client.post("/api/v1/datasets", json={"name": "ok", "kind": "imagefolder", "root": "ok"}).status_code in (
        201, 409)


def _artifact(client: TestClient, rel: str) -> int:
    with client.app.state.session_factory() as s:
        art = repo.store_artifact(s, client.app.state.settings.data_dir, kind="report", name="r.txt", source=b"hi")
        art.path = rel
        s.commit()
        return art.id


def test_artifact_downloads_stay_inside(client: TestClient, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("do not serve")
    data_dir = client.app.state.settings.data_dir
    ok = _artifact(client, "artifacts/00000001-r.txt")
    assert client.get(f"/api/v1/artifacts/{ok}/download").content == b"hi"
    os.symlink(secret, data_dir / "artifacts" / "link.txt")
    for rel in (f"../{secret.name}", str(secret), "artifacts/link.txt", "artifacts/../../secret.txt"):
        r = client.get(f"/api/v1/artifacts/{_artifact(client, rel)}/download")
        assert r.status_code == 403 and "outside the artifacts directory" in r.json()["detail"], (rel, r.text)
    for url in ("/api/v1/artifacts/..%2F..%2Fetc%2Fpasswd/download", "/api/v1/artifacts/%2e%2e/download"):
        assert client.get(url).status_code in (404, 422)


def test_upload_over_the_limit_is_refused_by_content_length(client: TestClient) -> None:
    client.app.state.settings.max_upload_mb = 1
    r = client.post("/api/v1/models", data={"name": "m", "architecture": "digits-cnn"},
                    files={"checkpoint": ("m.pt", b"\0" * (2 * 2**20 + BODY_SLACK_BYTES))})
    assert r.status_code == 413 and "PRUNESCOPE_MAX_UPLOAD_MB" in r.json()["detail"]
    assert client.get("/api/v1/models").json() == []


@pytest.mark.parametrize(("content_type", "limit_mb"), [("multipart/form-data; boundary=x", 1.0),
                                                       ("application/json", 0.5)])
def test_body_limit_stops_reading_a_stream_without_content_length(content_type: str, limit_mb: float) -> None:
    """An endless chunked body: the guard must stop after ``limit`` bytes, not read everything first
    (uploads: PRUNESCOPE_MAX_UPLOAD_MB plus slack; any other body: PRUNESCOPE_MAX_JSON_MB)."""
    settings = Settings(max_upload_mb=1, max_json_mb=0.5)
    chunk = b"x" * 65536
    pulled = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict) -> None:
        sent.append(message)

    async def app(scope: dict, receive, send) -> None:  # noqa: ANN001 - reads the body like a route would
        while (await receive()).get("more_body"):
            pass

    scope = {"type": "http", "method": "POST", "path": "/api/v1/models",
             "headers": [(b"transfer-encoding", b"chunked"), (b"content-type", content_type.encode())]}
    # a fresh loop in its own thread: Playwright's sync API may hold this thread's loop (browser tests)
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, BodyLimit(app, lambda: settings)(scope, receive, send)).result()
    assert sent[0]["status"] == 413
    allowed = settings.max_upload_bytes + BODY_SLACK_BYTES if limit_mb == 1.0 else settings.max_json_bytes
    assert allowed < pulled * len(chunk) <= allowed + len(chunk)
