"""Browser fixtures: one live embedded server (a subprocess on a free port, a temp data dir, --no-demo)
and one headless Chromium for the whole session; a fresh page per test.

Chromium is Debian's (``/usr/bin/chromium``; ``PRUNESCOPE_CHROMIUM`` overrides): ``playwright
install`` is not used. Screenshots go to ``$PRUNESCOPE_SCREENSHOTS`` or ``out/screenshots/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from dash_helpers import CHROMIUM_ARGS, TIMEOUT_MS, Server, chromium_path, running_server


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("prunescope-data")) as srv:
        yield srv


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    exe = chromium_path()
    if exe is None:
        pytest.skip("no Chromium found (/usr/bin/chromium or PRUNESCOPE_CHROMIUM): browser tests need one")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    context = browser.new_context(base_url=server.url, accept_downloads=True, viewport={"width": 1360, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture(scope="package")
def store(server: Server) -> Iterator[Any]:
    """A session factory on the live server's SQLite store, for inserting synthetic jobs and points."""
    from api.shared.settings import Settings
    from api.store import make_engine, make_session_factory

    engine = make_engine(Settings(data_dir=server.data_dir).db_url)
    yield make_session_factory(engine)
    engine.dispose()
