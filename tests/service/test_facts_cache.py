"""A `prunescope worker` on a new store takes the architectures' parameter facts from this interpreter's cache
when it holds them all, instead of building every architecture again (seconds of the worker's cores)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from api.store import make_engine, make_session_factory, migrate
from api.store.models import ArchitectureFacts
from pruning_core.names import MODEL_NAMES
from worker import facts

pytestmark = pytest.mark.slow  # the first worker builds every architecture on the meta device


def _factory(path: Path):
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    return engine, make_session_factory(engine)


def _wait(check, what: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_a_second_worker_publishes_the_cached_facts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cache = facts._cache_path()
    first_engine, first = _factory(tmp_path / "first.db")
    publisher = facts.publish_worker(first, "w-first", stale_s=60)
    try:
        _wait(cache.exists, "the first worker wrote no cache")
        assert facts.missing_architectures(first, MODEL_NAMES) == []
    finally:
        publisher.stop()
        first_engine.dispose()
    stored = json.loads(cache.read_text())
    assert set(MODEL_NAMES) <= set(stored["facts"])
    stored["facts"]["digits-cnn"]["published_by"] = "the cache"  # where the second store's fact comes from
    cache.write_text(json.dumps(stored))

    second_engine, second = _factory(tmp_path / "second.db")
    publisher = facts.publish_worker(second, "w-second", stale_s=60)
    try:
        def published() -> bool:
            with second() as s:
                return s.get(ArchitectureFacts, "digits-cnn") is not None
        _wait(published, "the second worker published nothing")
        assert facts.missing_architectures(second, MODEL_NAMES) == []
        with second() as s:
            assert s.get(ArchitectureFacts, "digits-cnn").published_by == "the cache"
    finally:
        publisher.stop()
        second_engine.dispose()
