"""The dashboard's files and the API docs as the app serves them: package data found through the import
system, gzip when the client takes it, validators and Cache-Control, and docs pages that reference only
this server's own assets (no CDN)."""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.routes import dashboard
from api.shared.settings import Settings
from worker.executor import Executor

GZIP = {"Accept-Encoding": "gzip"}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(data_dir=tmp_path / "data"), dispatcher=Executor)) as c:
        yield c


def test_dashboard_files_are_package_data() -> None:
    import frontend

    folder = dashboard.frontend_dir()
    assert folder == Path(frontend.__file__).parent
    assert {"index.html", "app.js", "util.js", "style.css"} <= {p.name for p in folder.iterdir()}


def test_index_loads_no_plotly(client: TestClient) -> None:
    index = client.get("/")
    assert index.status_code == 200 and 'src="app.js"' in index.text
    assert "plotly" not in index.text  # loaded on demand by the pages that draw (util.js loadPlotly)


def test_static_files_are_gzipped_with_validators(client: TestClient) -> None:
    source = (dashboard.frontend_dir() / "util.js").read_bytes()
    r = client.get("/util.js", headers=GZIP)
    assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
    assert r.content == source  # httpx decoded the gzip body
    assert int(r.headers["content-length"]) == len(gzip.compress(source, compresslevel=6, mtime=0)) < len(source)
    assert r.headers["cache-control"] == dashboard.APP_CACHE_CONTROL and r.headers["vary"] == "Accept-Encoding"
    assert r.headers["etag"].endswith('-gz"') and r.headers["last-modified"]

    again = client.get("/util.js", headers={**GZIP, "If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.headers["etag"] == r.headers["etag"] and not again.content

    plain = client.get("/util.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.content == source
    assert int(plain.headers["content-length"]) == len(source) and plain.headers["etag"] != r.headers["etag"]
    # the other representation's validator does not match: the full body again
    assert client.get("/util.js", headers={**GZIP, "If-None-Match": plain.headers["etag"]}).status_code == 200
    assert client.get("/util.js", headers={"If-Modified-Since": r.headers["last-modified"]}).status_code == 304
    refused = client.get("/util.js", headers={"Accept-Encoding": "gzip;q=0, identity"})
    assert "content-encoding" not in refused.headers


def test_plotly_is_vendored_compressed_and_cached(client: TestClient) -> None:
    r = client.get("/static/plotly.min.js", headers=GZIP)
    assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
    assert r.headers["cache-control"] == dashboard.VENDOR_CACHE_CONTROL
    assert int(r.headers["content-length"]) < dashboard.plotly_js_path().stat().st_size / 2


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_reference_only_local_assets(client: TestClient, page: str) -> None:
    r = client.get(page)
    assert r.status_code == 200, r.text
    assert r.headers["content-security-policy"] == dashboard.DOCS_CSP  # the browser may fetch nothing else
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", r.text)
    assert any(ref.endswith(".js") for ref in refs), refs
    for ref in refs:
        assert ref.startswith(dashboard.DOCS_ASSETS_URL + "/"), ref
        asset = client.get(ref, headers=GZIP)
        assert asset.status_code == 200 and asset.headers["cache-control"] == dashboard.VENDOR_CACHE_CONTROL, ref
    assert "/api/v1/openapi.json" in r.text
    assert "http://" not in r.text and "https://" not in r.text
