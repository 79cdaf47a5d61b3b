"""The API side of the bugs a new user hit in the dashboard (issue 16): a registered model never shadows an
architecture and a spec says which one it means (bug 2), ids are never handed out twice (bug 3), and every
bad dataset option is a 422 at submit that names each one (bug 4)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.shared.settings import Settings
from api.store import make_engine, make_session_factory
from api.store.models import Artifact, ModelEntry
from pruning_core.names import MODEL_ALIASES
from tests.apps import make_app

SENSE = {"model": "digits-cnn", "dataset": "digits", "levels": "0,0.5", "device": "cpu"}


@pytest.fixture
def app_on_store(settings: Settings) -> Iterator[TestClient]:
    """The app on the parametrised store (SQLite, then PostgreSQL), nothing run."""
    with TestClient(make_app(settings)) as c:
        yield c


def _submit(client: TestClient, spec: dict | None = None, kind: str = "sensitivity") -> dict:
    r = client.post("/api/v1/jobs", json={"kind": kind, "spec": spec or SENSE})
    assert r.status_code == 201, r.text
    return r.json()


def test_a_deleted_jobs_id_is_never_handed_out_again(app_on_store: TestClient) -> None:
    first, second = _submit(app_on_store)["id"], _submit(app_on_store)["id"]
    for job_id in (second, first):  # the highest first: that is the one a plain rowid reuses
        assert app_on_store.delete(f"/api/v1/jobs/{job_id}").status_code == 204
    third = _submit(app_on_store)["id"]
    assert third > second, (first, second, third)
    assert app_on_store.get(f"/api/v1/jobs/{second}").status_code == 404


def test_every_bad_dataset_option_is_named_in_one_422(client: TestClient) -> None:
    r = client.post("/api/v1/jobs", json={"kind": "sensitivity", "spec": {
        **SENSE, "dataset": "synthetic", "dataset_options": {"bogus": 1, "n": "many", "classes": 3}}})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail.startswith("spec.dataset_options: 2 bad options: bogus: ") and "; n: option n='many'" in detail
    r = client.post("/api/v1/jobs", json={"kind": "sensitivity", "spec": {**SENSE, "dataset_options": {"bogus": 1}}})
    assert r.status_code == 422 and "bogus" in r.json()["detail"], r.text
    assert [e["field"] for e in r.json()["errors"]] == ["spec.dataset_options.bogus"]
    assert client.app.state.dispatcher.sent == []  # nothing was queued to fail later


@pytest.mark.parametrize("name", ["digits-cnn", next(iter(MODEL_ALIASES))])
def test_an_architecture_name_is_refused_as_a_registry_name(client: TestClient, name: str) -> None:
    r = client.post("/api/v1/jobs", json={"kind": "train", "spec": {
        "model": "digits-cnn", "dataset": "digits", "epochs": 1, "register_as": name}})
    assert r.status_code == 422, r.text
    assert "spec.register_as" in r.text and "architecture" in r.json()["detail"]
    r = client.post("/api/v1/models", data={"name": name, "architecture": "digits-cnn"},
                    files={"checkpoint": ("ck.pt", b"not read: the name is refused first")})
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith("name: ") and "architecture" in r.json()["detail"]


def test_a_spec_says_whether_it_means_the_architecture_or_a_registered_model(
        client: TestClient, sqlite_settings: Settings) -> None:
    assert _submit(client)["spec"]["model_kind"] == "architecture"
    r = client.post("/api/v1/jobs", json={"kind": "sensitivity", "spec": {**SENSE, "model_kind": "registered"}})
    assert r.status_code == 422 and "spec.model" in r.json()["detail"], r.text
    # a model that an older server let register under the architecture's name: the spec decides which is meant
    engine = make_engine(sqlite_settings.db_url)
    with make_session_factory(engine)() as s:
        s.add(Artifact(kind="checkpoint", name="old.pt", path="old.pt", size=1, sha256="0" * 64))
        s.flush()
        artifact = s.scalar(select(Artifact.id))
        s.add(ModelEntry(name="digits-cnn", architecture="digits-cnn", artifact_id=artifact, validation="valid"))
        s.commit()
    engine.dispose()
    assert _submit(client)["spec"]["model_kind"] == "registered"  # nothing said: the registry's, as before
    fresh = _submit(client, {**SENSE, "model_kind": "architecture"})
    assert fresh["spec"]["model_kind"] == "architecture"
    stored = client.get(f"/api/v1/jobs/{fresh['id']}").json()["spec"]
    assert stored["model_kind"] == "architecture"


def test_shapes_of_an_unknown_model_are_a_404(client: TestClient) -> None:
    """GET /shapes answers only what SQL holds (nothing is built): no published facts, no shapes."""
    r = client.get("/api/v1/shapes", params={"model": "no-such-net"})
    assert r.status_code == 404 and "no-such-net" in r.json()["detail"]
