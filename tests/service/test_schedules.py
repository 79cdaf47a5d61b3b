"""Schedule validation and preview through the API, on Distiller's published schedules (the shared ``client``:
a temp SQLite store and a recording dispatcher)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

SCHEDULES = Path(__file__).resolve().parents[2] / ".." / "shared" / "distiller-schedules"
RESNET20_FILTERS = SCHEDULES / "resnet20_filters.schedule_agp.yaml"


@pytest.mark.skipif(not RESNET20_FILTERS.exists(), reason=f"Distiller's schedules are not at {SCHEDULES}")
def test_preview_walks_a_distiller_schedule(client: TestClient) -> None:
    body = {"yaml": RESNET20_FILTERS.read_text(), "model": "resnet20_cifar", "lr": 0.3}
    r = client.post("/api/v1/schedules/preview", json=body)
    assert r.status_code == 200, r.text
    preview = r.json()
    assert ["module.fc.weight", "fc.weight"] in preview["renames"]
    epochs = preview["epochs"]
    assert [e["epoch"] for e in epochs] == list(range(len(epochs)))
    # the filter pruner of layer2.x.conv1 reaches its final sparsity (0.5) by the end of its policy
    last = epochs[-1]["sparsity"]
    assert last["layer2.0.conv1.weight"] == pytest.approx(0.5)
    assert any(e["thinning"] for e in epochs)  # FilterRemover: the epochs where thinning happens
    assert epochs[0]["lr"] == pytest.approx(0.3)


@pytest.mark.parametrize("body, status, message", [
    ({"yaml": "version: 1\npolicies: [\n", "model": "digits-cnn"}, 422, "yaml:"),
    ({"yaml": "version: 1\npruners:\n  p:\n    class: AutomatedGradualPruner\n    initial_sparsity: 0.1\n"
              "    final_sparsity: 0.5\n    weights: [conv9.weight]\npolicies:\n  - pruner: {instance_name: p}\n"
              "    starting_epoch: 0\n    ending_epoch: 3\n    frequency: 1\n", "model": "digits-cnn"},
     422, "conv9.weight"),
    ({"yaml": "version: 1\n", "model": "no-such-net"}, 422, "model"),
    ({"yaml": "version: 1\n", "model": "digits-cnn", "epochs": 0}, 422, "epochs"),
])
def test_preview_refuses_bad_input_with_the_reason(client: TestClient, body: dict, status: int,
                                                   message: str) -> None:
    r = client.post("/api/v1/schedules/preview", json=body)
    assert r.status_code == status, r.text
    assert message in r.text
