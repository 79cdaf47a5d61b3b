"""Your own network and data through the service (issue 14), on one live server.

Models without code: a network in no catalogue, exported with torch.export, is uploaded through REST with no
architecture and analysed by the server's worker; its points equal ``analyze()`` on the original module,
element and filter groups. A program whose graph fixes a layer's mode cannot be fine-tuned: its upload says so
and a prune job on it is a 422 that says what works on it. (The hostile ``.pt2`` files are refused by the same
scan in tests/core/test_exported.py.) Your own data: a language model's sweep over a local text file reports
loss and perplexity per point, and a language model on an image dataset is refused up front.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pruning_core.datasets import load_dataset, make_loader
from pruning_core.exported import export_model
from pruning_core.names import EXPORTED_ARCHITECTURE
from pruning_core.sensitivity import analyze
from tests.live import Server, running_server
from tests.networks import Net, calibrated_net

DATA = {"dataset": "synthetic", "dataset_options": {"n": 48, "shape": "3x8x8", "classes": 10, "seed": 3}}
LEVELS = [0.0, 0.5, 0.8]
PARAMS = ["stem.weight", "dw.weight", "pw.weight", "head.weight"]
SCHEDULE = """version: 1
pruners:
  conv:
    class: SparsityLevelParameterPruner
    levels: {conv.weight: 0.5}
policies:
  - pruner: {instance_name: conv}
    epochs: [0]
"""


def program_bytes(model: nn.Module) -> bytes:
    buf = io.BytesIO()
    export_model(model, torch.randn(2, 3, 8, 8), buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def net() -> Net:
    return calibrated_net()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local text file under a dataset root: a few thousand words of a small seeded grammar."""
    root = tmp_path_factory.mktemp("corpus")
    gen = torch.Generator().manual_seed(0)
    words = ["the", "a", "cat", "dog", "sees", "likes", "small", "red", "tree", "house", "runs", "under"]
    lines = [" ".join(words[int(i)] for i in torch.randint(0, len(words), (12,), generator=gen)) for _ in range(300)]
    (root / "tiny.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("own"), PRUNESCOPE_DATASET_ROOTS=str(corpus)) as srv:
        yield srv


def upload(url: str, name: str, data: bytes, **form: str) -> httpx.Response:
    return httpx.post(f"{url}/api/v1/models", data={"name": name, **form},
                      files={"checkpoint": (f"{name}.pt2", data, "application/octet-stream")}, timeout=60)


def finished(url: str, job_id: int, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/api/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.3)
    pytest.fail(f"job {job_id} did not finish within {timeout_s} s")


@pytest.mark.slow
def test_an_uploaded_program_is_analysed_like_its_original(server: Server, net: Net) -> None:
    r = upload(server.url, "skipnet", program_bytes(net))
    assert r.status_code == 201, r.text
    model = r.json()
    assert model["architecture"] == EXPORTED_ARCHITECTURE and model["validation"] == "valid"
    assert model["metrics"] == {"fine_tuning": None}  # its layers were recovered: fine-tuning can work
    test_split = load_dataset(DATA["dataset"], "test", **DATA["dataset_options"])
    for group in ("element", "filter"):
        spec = {"model": "skipnet", **DATA, "levels": LEVELS, "params": PARAMS, "group": group, "batch_size": 16}
        r = httpx.post(f"{server.url}/api/v1/jobs", json={"kind": "sensitivity", "spec": spec})
        assert r.status_code == 201, r.text
        job = finished(server.url, r.json()["id"])
        assert job["status"] == "succeeded", job.get("error")
        assert job["result"]["engine"] == "fast" and job["result"]["engine_note"] is None
        got = httpx.get(f"{server.url}/api/v1/jobs/{job['id']}/points").json()
        want = analyze(net, make_loader(test_split, batch_size=16), levels=LEVELS, params=PARAMS, group=group,
                       device="cpu", engine="plain").points
        assert [(p["parameter"], p["sparsity"]) for p in got] == [(p.parameter, p.sparsity) for p in want]
        for a, b in zip(got, want, strict=True):
            assert (a["top1"], a["top5"], a["samples"], a["nnz"], a["macs"]) == (b.top1, b.top5, b.samples, b.nnz,
                                                                                  b.macs)
            # The server's threads may split a convolution's sums differently from this process's.
            assert a["loss"] == pytest.approx(b.loss, rel=1e-5)
        assert len({p["loss"] for p in got}) > 1  # the levels did change the answers


class FixedMode(nn.Module):
    """A functional batch_norm on buffers: the exported graph fixes its eval mode, so it cannot be trained."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 10)
        self.register_buffer("mean", torch.zeros(4))
        self.register_buffer("var", torch.ones(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.batch_norm(self.conv(x), self.mean, self.var, training=False).mean((2, 3)))


def test_a_program_that_cannot_be_trained_is_refused_for_fine_tuning(server: Server, tmp_path: Path) -> None:
    r = upload(server.url, "fixedmode", program_bytes(FixedMode()))
    assert r.status_code == 201, r.text
    why = r.json()["metrics"]["fine_tuning"]
    assert "batch_norm" in why and "sensitivity analysis works" in why
    body = {"kind": "prune", "spec": {"model": "fixedmode", **DATA, "epochs": 1,
                                      "schedule": SCHEDULE}}
    r = httpx.post(f"{server.url}/api/v1/jobs", json=body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail.startswith("spec.model:") and "cannot be fine-tuned" in detail and "sensitivity job works" in detail
    # an architecture given with a program is refused, naming the rule; a checkpoint without one too
    r = upload(server.url, "named", program_bytes(FixedMode()), architecture="digits-cnn")
    assert r.status_code == 422 and "torch.export program" in r.json()["detail"], r.text
    plain = io.BytesIO()
    torch.save(FixedMode().state_dict(), plain)
    r = httpx.post(f"{server.url}/api/v1/models", data={"name": "bare"},
                   files={"checkpoint": ("bare.pt", plain.getvalue(), "application/octet-stream")})
    assert r.status_code == 422 and r.json()["detail"].startswith("architecture:"), r.text


@pytest.mark.slow
def test_a_language_model_sweep_reports_perplexity_per_point(server: Server, corpus: Path) -> None:
    spec = {"model": "lstm-lm", "dataset": "text",
            "dataset_options": {"root": str(corpus / "tiny.txt"), "seq_len": 16},
            "levels": [0.0, 0.5, 0.9], "params": ["embed.weight", "decoder.weight"], "batch_size": 32}
    r = httpx.post(f"{server.url}/api/v1/jobs", json={"kind": "sensitivity", "spec": spec})
    assert r.status_code == 201, r.text
    job = finished(server.url, r.json()["id"])
    assert job["status"] == "succeeded", job.get("error")
    points = httpx.get(f"{server.url}/api/v1/jobs/{job['id']}/points").json()
    assert [(p["parameter"], p["sparsity"]) for p in points] == [
        (name, level) for name in spec["params"] for level in spec["levels"]]
    for p in points:
        assert p["top1"] is None and p["top5"] is None  # a language model has no class accuracy
        assert p["metrics"]["perplexity"] == pytest.approx(math.exp(p["loss"]), rel=1e-9)
    assert len({p["metrics"]["perplexity"] for p in points}) > 1
    # the CSV keeps Distiller's five columns; what a task lacks is empty
    csv = httpx.get(f"{server.url}/api/v1/jobs/{job['id']}/points.csv").text.splitlines()
    assert csv[0] == "parameter,sparsity,top1,top5,loss" and csv[1].split(",")[2:4] == ["", ""]
    # plans work on the metric chosen
    r = httpx.post(f"{server.url}/api/v1/plans", json={"sensitivity_job": job["id"], "metric": "perplexity",
                                                        "max_drop": 1e6})
    assert r.status_code == 200, r.text
    assert r.json()["metric"] == "perplexity" and "perplexity rise" in r.json()["unit"]


def test_a_language_model_on_an_image_dataset_is_refused(server: Server) -> None:
    spec = {"model": "lstm-lm", "dataset": "digits", "levels": [0.0, 0.5]}
    r = httpx.post(f"{server.url}/api/v1/jobs", json={"kind": "sensitivity", "spec": spec})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail.startswith("spec.dataset:") and "language-model" in detail and "synthetic-tokens" in detail
