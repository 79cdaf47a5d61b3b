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
