"""The client's pieces that need no server: light import, options, errors, auth header, SSE parsing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from api.client import POINT_COLUMNS, Client, PrunescopeError, dataset_options
from api.client.core import _parse_sse, _schedule_text


def test_import_pulls_in_neither_torch_nor_the_server() -> None:
    code = ("import sys, api.client; heavy = [m for m in ('torch', 'fastapi', 'sqlalchemy', 'pruning_core') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_point_columns_are_the_store_fields() -> None:
    from api.store.models import POINT_FIELDS

    assert POINT_COLUMNS == POINT_FIELDS


def test_dataset_options_take_the_cli_pairs_or_a_dict() -> None:
    assert dataset_options(["n=1000", "shape=1x8x8", "flip=true", "scale=0.5"]) == {
        "n": 1000, "shape": "1x8x8", "flip": True, "scale": 0.5}
    assert dataset_options({"root": "/data"}) == {"root": "/data"}
    with pytest.raises(ValueError, match="expected key=value"):
        dataset_options(["n"])


def _mock(handler) -> Client:  # noqa: ANN001 - an httpx handler
    return Client("http://server", token="s3cret", transport=httpx.MockTransport(handler), progress=False)


def test_token_is_sent_as_bearer_and_errors_carry_the_api_message() -> None:
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["auth"] = request.headers.get("authorization")
        seen["url"] = str(request.url)
        return httpx.Response(422, json={"detail": "spec.levels: bad", "errors": [{"field": "spec.levels",
                                                                                   "message": "bad"}]})

    with pytest.raises(PrunescopeError) as info:
        _mock(handler).job(7)
    assert seen == {"auth": "Bearer s3cret", "url": "http://server/api/v1/jobs/7"}
    assert (info.value.status, info.value.message) == (422, "spec.levels: bad")
    assert info.value.errors[0]["field"] == "spec.levels"


def test_schedule_is_text_or_a_file(tmp_path: Path) -> None:
    text = "version: 1\npruners: {}\n"
    (tmp_path / "s.yaml").write_text(text)
    path = tmp_path / "s.yaml"
    assert _schedule_text(text) == text == _schedule_text(path) == _schedule_text(str(path))
    assert _schedule_text("{version: 1, policies: []}") == "{version: 1, policies: []}"
    with pytest.raises(FileNotFoundError):
        _schedule_text(str(tmp_path / "typo.yaml"))


def test_url_and_token_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRUNESCOPE_URL", "http://env-host:9/")
    monkeypatch.setenv("PRUNESCOPE_TOKEN", "t")
    client = Client()
    assert client.url == "http://env-host:9"
    assert client._http.headers["authorization"] == "Bearer t"
    monkeypatch.delenv("PRUNESCOPE_URL")
    with pytest.raises(ValueError, match="Client.local"):
        Client()


def test_unreachable_server_is_a_prunescope_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(PrunescopeError, match="cannot reach prunescope") as info:
        _mock(handler).health()
    assert info.value.status is None


def test_sse_parsing() -> None:
    lines = ["event: point", f"data: {json.dumps({'parameter': 'fc.weight'})}", "", "event: end",
             'data: {"status": "succeeded"}', ""]
    events = list(_parse_sse(iter(lines)))
    assert [(e.event, e.data) for e in events] == [("point", {"parameter": "fc.weight"}),
                                                   ("end", {"status": "succeeded"})]


@pytest.mark.parametrize(("method", "spec"), [("train", "TrainSpec"), ("sense", "SensitivitySpec"),
                                               ("prune", "PruneSpec"), ("launch_plan", "PlanLaunch"),
                                               ("measure_plan", "PlanMeasure")])
def test_every_spec_field_is_a_keyword_of_its_method(method: str, spec: str) -> None:
    """The CLI/API parity lives in the schemas; the client must not fall behind them."""
    import inspect

    import api.schemas

    fields = set(getattr(api.schemas, spec).model_fields) - {"sensitivity_job", "experiment_id"}
    assert fields <= set(inspect.signature(getattr(Client, method)).parameters), fields


def test_cli_options_reach_the_request_body() -> None:
    sent: list[tuple[str, dict]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else dict(request.url.params)
        sent.append((request.url.path, body))
        return httpx.Response(201, json={"id": 1, "kind": "prune", "status": "queued", "spec": {}})

    client = _mock(handler)
    client.train("lenet5", "digits", momentum=0.5, weight_decay=0.0, optimizer="adamw", wait=False)
    client.sense("lenet5", "digits", group="filter", seed=3, early_stop=40.0, amp=True, latency=True, wait=False)
    client.prune("lenet5", "digits", "version: 1\npruners: {}\n", optimizer="adam", momentum=0.1, weight_decay=0.2,
                 seed=4, start_epoch=2, latency_batch=8, thin=True, wait=False)
    client.launch_plan(5, target_sparsity=0.5, one_shot=True, thin=True, wait=False)
    specs = [body.get("spec", body) for _, body in sent]
    assert {k: specs[0][k] for k in ("momentum", "weight_decay", "optimizer")} == {
        "momentum": 0.5, "weight_decay": 0.0, "optimizer": "adamw"}
    assert {k: specs[1][k] for k in ("seed", "early_stop", "amp", "latency")} == {
        "seed": 3, "early_stop": 40.0, "amp": True, "latency": True}
    assert {k: specs[2][k] for k in ("optimizer", "momentum", "weight_decay", "seed", "start_epoch", "latency_batch",
                                     "thin")} == {"optimizer": "adam", "momentum": 0.1, "weight_decay": 0.2, "seed": 4,
                                                  "start_epoch": 2, "latency_batch": 8, "thin": True}
    assert sent[3][0] == "/api/v1/plans/launch" and {k: specs[3].get(k) for k in (
        "target_sparsity", "max_drop", "one_shot", "thin")} == {"target_sparsity": 0.5, "max_drop": None,
                                                               "one_shot": True, "thin": True}


def test_list_stream_parameters() -> None:
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen[request.url.path] = dict(request.url.params)
        return httpx.Response(200, text='event: end\ndata: {"reason": "max_s"}\n\n',
                              headers={"content-type": "text/event-stream"})

    client = _mock(handler)
    assert [e.event for e in client.job_events(kind="prune", experiment=2, max_s=5)] == ["end"]
    list(client.events(9, points=False))
    assert seen["/api/v1/jobs/events"] == {"poll_s": "0.5", "kind": "prune", "experiment": "2", "max_s": "5"}
    assert seen["/api/v1/jobs/9/events"] == {"poll_s": "0.5", "points": "false"}
