"""Trust-suite fixtures: the service's store fixtures reused, an app with a recording dispatcher."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from tests.service.conftest import db_url, pg_database, settings  # noqa: F401 - fixtures reused
from tests.service.test_api import RecordingDispatcher


def make_app(cfg: Settings) -> FastAPI:
    return create_app(cfg, dispatcher=RecordingDispatcher())


@pytest.fixture
def sqlite_settings(tmp_path) -> Settings:  # noqa: ANN001 - pytest's tmp_path
    """A temp SQLite store: the access and path tests are about the app, not the database."""
    return Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'store.db'}")


@pytest.fixture
def client(sqlite_settings: Settings) -> Iterator[TestClient]:
    with TestClient(make_app(sqlite_settings)) as c:
        yield c

