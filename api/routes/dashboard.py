"""What the dashboard needs beyond REST v1: plotly.js from the installed plotly package, and the
names of the built-in architectures (for the new-job form's model menu).

Wiring (in ``create_app``, anywhere before or after the static mount): ``dashboard.install(app)``.
``install`` puts these routes ahead of the ``/`` static mount, which would otherwise answer first.
Nothing here imports plotly or torch: the file is located through the import system only.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException
from fastapi.responses import FileResponse
from starlette.routing import Mount

from pruning_core.names import DATASET_NAMES, MODEL_ALIASES, MODEL_NAMES, TORCHVISION_MODEL_NAMES

API_PREFIX = "/api/v1"
router = APIRouter(tags=["dashboard"])  # served at the root: /static/...
api_router = APIRouter(tags=["dashboard"])  # included under /api/v1


@lru_cache(maxsize=1)
def plotly_js_path() -> Path | None:
    """``plotly/package_data/plotly.min.js`` of the installed plotly package (None if absent)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / "package_data" / "plotly.min.js"
        if path.is_file():
            return path
    return None


@router.get("/static/plotly.min.js", include_in_schema=False)
def plotly_js() -> FileResponse:
    path = plotly_js_path()
    if path is None:
        raise HTTPException(404, "plotly.min.js: the plotly package is not installed (pip install plotly)")
    return FileResponse(path, media_type="application/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})


@api_router.get("/architectures")
def architectures() -> dict[str, Any]:
    """Built-in model architectures (prunescope's own, torchvision's) and the dataset kinds."""
    return {"prunescope": list(MODEL_NAMES), "torchvision": list(TORCHVISION_MODEL_NAMES),
            "aliases": dict(MODEL_ALIASES), "datasets": list(DATASET_NAMES)}


def install(app: FastAPI) -> None:
    """Include the dashboard routes and move them ahead of any static mount at ``/``."""
    before = len(app.router.routes)
    app.include_router(router)
    app.include_router(api_router, prefix=API_PREFIX)
    added = app.router.routes[before:]
    rest = app.router.routes[:before]
    mounts = [r for r in rest if isinstance(r, Mount) and r.path in ("", "/")]
    others = [r for r in rest if r not in mounts]
    app.router.routes[:] = [*others, *added, *mounts]
