"""The API app as the in-process tests build it: a dispatcher that records instead of running, and an
app over a temp SQLite store. Plain helpers (no fixtures): tests import them; the fixtures built on them
(``sqlite_settings``, ``client``) live in tests/fixtures.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI

from api.app import create_app
from api.shared.settings import Settings


class RecordingDispatcher:
    """Stands in for Celery/the executor: remembers what would have been run."""

    name = "recording"

    def __init__(self) -> None:
        self.sent: list[tuple[int, int]] = []

    def dispatch(self, job_id: int, shard: int) -> None:
        self.sent.append((job_id, shard))

    def healthy(self) -> tuple[bool, str]:
        return True, "recording"


def sqlite_settings_in(directory: Path, **overrides: Any) -> Settings:
    """Settings for a store of its own under ``directory`` (data dir and SQLite file), plus ``overrides``."""
    return Settings(data_dir=directory / "data", database_url=f"sqlite:///{directory / 'store.db'}", **overrides)


def make_app(cfg: Settings) -> FastAPI:
    """The real app on ``cfg`` with a RecordingDispatcher: requests are served, nothing is run."""
    return create_app(cfg, dispatcher=RecordingDispatcher())
