"""The API serves and accepts exactly the library's catalogue (issue 19).

``GET /api/v1/architectures`` must equal what ``pruning_core`` builds, and ``POST /api/v1/jobs`` must
accept every torchvision classification model, taken from torchvision itself rather than from the
catalogue, so a name the catalogue forgot fails here. The app is the shared ``client`` (tests/fixtures.py):
a temp SQLite store and a dispatcher that records what it would have run.
"""

from __future__ import annotations

import torchvision.models as tvm
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.store.models import Job
from pruning_core.datasets import list_datasets
from pruning_core.models import canonical_name, list_models, model_info
from pruning_core.names import architecture, canonical_model_name, catalogue


def _sense(client: TestClient, model: str) -> dict:
    entry = architecture(canonical_model_name(model) or model)
    dataset = "synthetic-tokens" if entry is not None and entry.task == "language-model" else "synthetic"
    r = client.post("/api/v1/jobs", json={"kind": "sensitivity",
                                          "spec": {"model": model, "dataset": dataset, "levels": "0,0.5",
                                                   "shards": 1}})
    return {"status": r.status_code, "body": r.json()}


def test_architectures_route_equals_the_librarys_catalogue(client: TestClient) -> None:
    served = client.get("/api/v1/architectures").json()
    assert {k: v for k, v in served.items() if k != "published"} == catalogue()  # + what live workers publish
    # ... and what the library (with torch) resolves and builds, name by name.
    by_name = {a["name"]: a for a in served["architectures"]}
    assert sorted([*by_name, *served["aliases"]]) == sorted(list_models())
    for name in list_models():
        info = model_info(name)
        entry = by_name[canonical_name(name)]
        assert (entry["input_shape"], entry["num_classes"]) == (list(info.input_shape), info.num_classes), name
    assert {alias: canonical_name(alias) for alias in served["aliases"]} == served["aliases"]
    assert served["torchvision"] == sorted(tvm.list_models(module=tvm))
    assert served["datasets"] == list_datasets()


def test_every_torchvision_classification_model_is_accepted(client: TestClient) -> None:
    names = tvm.list_models(module=tvm)
    assert len(names) >= 80
    refused = {name: answer for name in names if (answer := _sense(client, name))["status"] != 201}
    assert refused == {}
    assert len(client.app.state.dispatcher.sent) == len(names)
    with client.app.state.session_factory() as session:
        stored = sorted(spec["model"] for spec in session.scalars(select(Job.spec)))
    assert stored == sorted(names)


def test_own_architectures_and_distiller_aliases_are_accepted(client: TestClient) -> None:
    served = client.get("/api/v1/architectures").json()
    for name in [*served["prunescope"], *served["aliases"]]:
        assert _sense(client, name)["status"] == 201, name


def test_unknown_architecture_is_refused_naming_the_field(client: TestClient) -> None:
    answer = _sense(client, "resnet21-cifar")
    assert answer["status"] == 422
    assert "spec.model" in answer["body"]["detail"] and "resnet21-cifar" in answer["body"]["detail"]
    assert client.app.state.dispatcher.sent == []
