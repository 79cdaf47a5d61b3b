"""Access control: the bearer token on every route (enumerated from app.routes, so a new route is
covered without editing this file), the public exceptions, serve's refusal, CORS."""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import BaseRoute, Mount, Route

from api.cli import main as cli_main
from api.security import PUBLIC_PATHS
from api.shared.settings import Settings
from tests.apps import make_app

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def guarded(sqlite_settings: Settings):  # noqa: ANN201 - a TestClient
    sqlite_settings.token = TOKEN
    with TestClient(make_app(sqlite_settings)) as c:
        yield c


def _concrete(path: str) -> str:
    """/jobs/{job_id}/points -> /jobs/1/points (ids that do not exist: no stream ever starts); the list's
    event stream, which needs no id and never ends by itself, is bounded with max_s."""
    path = re.sub(r"\{[^}]+\}", "424242", path)
    return f"{path}?max_s=0.1" if path.endswith("/jobs/events") else path


def _flat_routes(app: FastAPI) -> list[tuple[BaseRoute, str]]:
    """(route, full path) for every route, looking inside FastAPI >= 0.16x's lazily included routers."""
    out = []
    for route in app.routes:
        contexts = getattr(route, "effective_route_contexts", None)
        out += [(c.original_route, c.path) for c in contexts()] if contexts else [(route, route.path)]
    return out


def _api_requests(client: TestClient) -> list[tuple[str, str]]:
    return [(method, _concrete(path)) for route, path in _flat_routes(client.app) if isinstance(route, APIRoute)
            for method in sorted(route.methods)]


def test_every_api_route_needs_the_token(guarded: TestClient) -> None:
    requests = _api_requests(guarded)
    assert len(requests) >= 25
    for method, path in requests:
        bare = guarded.request(method, path)
        wrong = guarded.request(method, path, headers={"Authorization": "Bearer nope"})
        good = guarded.request(method, path, headers=AUTH)
        if path in PUBLIC_PATHS or path.startswith("/static/"):
            assert bare.status_code != 401 and good.status_code != 401, path
            continue
        assert bare.status_code == 401, f"{method} {path}: {bare.status_code}"
        assert wrong.status_code == 401, f"{method} {path}"
        assert bare.headers["www-authenticate"] == "Bearer" and "PRUNESCOPE_TOKEN" in bare.json()["detail"]
        assert good.status_code != 401, f"{method} {path}: {good.text}"


def test_public_routes_are_only_health_docs_and_static_files(guarded: TestClient) -> None:
    """Decided: /healthz (probes), the OpenAPI document and /docs (the API's shape, no data), the
    dashboard's files (code, no data) are public; data only ever comes from /api/v1 with the token."""
    routes = _flat_routes(guarded.app)
    public_api = {path for _, path in _api_requests(guarded)} & PUBLIC_PATHS
    assert public_api == {"/healthz", "/api/v1/healthz"}
    static = [path for route, path in routes if isinstance(route, APIRoute) and path.startswith("/static/")]
    assert static == ["/static/plotly.min.js"]  # vendored JS, public by prefix
    assert guarded.get("/static/plotly.min.js").status_code in (200, 404)  # 404 only without plotly installed
    for route, _ in routes:
        if isinstance(route, Route) and not isinstance(route, APIRoute):
            assert route.path in PUBLIC_PATHS, route.path  # FastAPI's own docs routes
            assert guarded.get(route.path).status_code == 200
        if isinstance(route, Mount):  # the dashboard's static files
            assert guarded.get("/").status_code == 200
            assert guarded.get("/app.js").status_code == 200
    assert guarded.get("/healthz").json()["ok"] is True
    assert guarded.get("/api/v1/no-such-thing").status_code == 401  # unknown API paths are not probeable


def test_browser_links_may_carry_the_token_in_the_query(guarded: TestClient) -> None:
    """EventSource and <a href> cannot send headers: those GETs accept ?access_token=, nothing else does."""
    for path in ("/api/v1/jobs/424242/events", "/api/v1/artifacts/424242/download", "/api/v1/jobs/424242/points.csv"):
        assert guarded.get(path).status_code == 401
        assert guarded.get(path, params={"access_token": TOKEN}).status_code == 404
        assert guarded.get(path, params={"access_token": "nope"}).status_code == 401
    assert guarded.get("/api/v1/jobs", params={"access_token": TOKEN}).status_code == 401
    assert guarded.post("/api/v1/experiments", params={"access_token": TOKEN}, json={"name": "x"}).status_code == 401


def test_openapi_declares_the_bearer_scheme(guarded: TestClient) -> None:
    doc = guarded.get("/api/v1/openapi.json").json()
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert doc["paths"]["/api/v1/jobs"]["get"]["security"] == [{"bearer": []}]
    assert "security" not in doc["paths"]["/healthz"]["get"]


def test_no_token_means_open_on_loopback(client: TestClient) -> None:
    assert client.get("/api/v1/jobs").status_code == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com"])
def test_serve_refuses_public_bind_without_token(host: str, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str], tmp_path) -> None:  # noqa: ANN001
    monkeypatch.delenv("PRUNESCOPE_TOKEN", raising=False)
    monkeypatch.setenv("PRUNESCOPE_DATA_DIR", str(tmp_path))
    assert cli_main(["serve", "--host", host, "--no-demo"]) == 2
    err = capsys.readouterr().err
    assert "PRUNESCOPE_TOKEN" in err and host in err
    assert not (tmp_path / "prunescope.db").exists()  # refused before touching anything


def test_cors_closed_by_default(client: TestClient) -> None:
    evil = {"Origin": "https://evil.example"}
    assert "access-control-allow-origin" not in client.get("/api/v1/models", headers=evil).headers
    pre = client.options("/api/v1/models", headers={**evil, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in pre.headers


def test_cors_allow_list(sqlite_settings: Settings) -> None:
    sqlite_settings.cors_origins = "https://dash.example, https://other.example/"
    sqlite_settings.token = TOKEN
    with TestClient(make_app(sqlite_settings)) as c:
        ok = c.get("/api/v1/models", headers={"Origin": "https://other.example", **AUTH})
        assert ok.headers["access-control-allow-origin"] == "https://other.example"
        pre = c.options("/api/v1/models", headers={"Origin": "https://dash.example",
                                                   "Access-Control-Request-Method": "GET",
                                                   "Access-Control-Request-Headers": "authorization"})
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "https://dash.example"
        evil = c.get("/api/v1/models", headers={"Origin": "https://evil.example", **AUTH})
        assert "access-control-allow-origin" not in evil.headers
