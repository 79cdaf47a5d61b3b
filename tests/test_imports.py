"""The layers' import rule (DESIGN.md, issue 19), checked on the source with ``ast``:

- ``pruning_core`` imports nothing of the service (api, worker, fastapi, sqlalchemy, celery, pydantic);
- ``api/shared`` and ``api/store`` (what the API and the worker share) import no FastAPI, no torch and no
  worker code;
- the API never imports ``worker``: only the entry points that start an executor do (``prunescope serve``
  and ``prunescope worker``, and the client's local mode, which runs the service in the notebook).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXECUTOR_ENTRY_POINTS = {"api/commands/serve.py", "api/commands/worker.py", "api/client/local.py"}


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (lazy imports inside functions count too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _sources(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "migrations" not in p.parts)


def _offenders(folder: str, banned: tuple[str, ...], allowed: set[str] = frozenset()) -> list[str]:
    out = []
    for path in _sources(folder):
        rel = path.relative_to(ROOT).as_posix()
        if rel in allowed:
            continue
        bad = sorted(m for m in _imports(path) if m.split(".")[0] in banned or m.startswith(banned))
        if bad:
            out.append(f"{rel}: {', '.join(bad)}")
    return out


@pytest.mark.parametrize(("folder", "banned", "allowed"), [
    ("pruning_core", ("api", "worker", "fastapi", "starlette", "sqlalchemy", "celery", "pydantic", "httpx"), set()),
    ("api/shared", ("fastapi", "starlette", "torch", "torchvision", "worker", "api.routes", "api.app"), set()),
    ("api/store", ("fastapi", "starlette", "torch", "torchvision", "worker", "api.routes", "api.app"), set()),
    ("api", ("worker",), EXECUTOR_ENTRY_POINTS),
    # issue 18: exports and logging run in the worker too (automatic export, job log context)
    ("api/export", ("fastapi", "starlette", "torch", "torchvision", "worker", "api.routes", "api.app"), set()),
])
def test_imports_point_down(folder: str, banned: tuple[str, ...], allowed: set[str]) -> None:
    assert _offenders(folder, banned, allowed) == []


def test_the_worker_needs_only_the_shared_layer_of_the_api() -> None:
    """The worker reads settings, specs, the store and the task names, never the web app."""
    used = {m for path in _sources("worker") for m in _imports(path) if m.split(".")[0] == "api"}
    assert all(m.startswith(("api.shared", "api.store", "api.export", "api.logs")) for m in used), sorted(used)
