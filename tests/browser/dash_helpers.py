"""Helpers for the browser tests (and bench/dashboard_render.py): the live server, Chromium's path,
page navigation, screenshots, synthetic jobs written straight into the store (no runner involved)."""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from api.store import repo
from api.store.models import Job, JobShard, utcnow
from tests.live import Server, free_port, running_server, server_command  # noqa: F401 - re-exported

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]
TIMEOUT_MS = 15_000


def chromium_path() -> str | None:
    for candidate in (os.environ.get("PRUNESCOPE_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def screenshot_dir() -> Path:
    path = Path(os.environ.get("PRUNESCOPE_SCREENSHOTS") or ROOT / "out" / "screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def goto(page: Any, route: str) -> None:
    """Open a hash route (``#/jobs``) and wait until the router says the page has rendered."""
    if page.url.startswith("http"):
        page.evaluate("""r => {
            document.body.dataset.ready = '0';
            if (location.hash === r) window.dispatchEvent(new HashChangeEvent('hashchange'));
            else location.hash = r;
        }""", route)
    else:
        page.goto("/" + route)
    page.wait_for_function("document.body.dataset.ready === '1'")


def shot(page: Any, name: str) -> Path:
    path = screenshot_dir() / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def insert_sensitivity_job(factory: Any, n_params: int = 60, n_levels: int = 20, *, group: str = "element",
                           model: str = "digits-cnn", seed: int = 0) -> int:
    """A succeeded sensitivity job with ``n_params`` x ``n_levels`` points that look like real curves."""
    levels = [round(i / n_levels, 10) for i in range(n_levels)]
    with factory() as session:
        job = repo.create_job(session, kind="sensitivity", shards=1, spec={
            "model": model, "dataset": "digits", "dataset_options": {}, "batch_size": 256, "device": "cpu",
            "split": "test", "group": group, "levels": levels, "params": None, "samples": None,
            "coupled": False, "engine": "fast", "shards": 1})
        now = utcnow()
        job.status, job.started_at, job.finished_at = "succeeded", now, now
        job.progress_done = job.progress_total = n_params * n_levels
        for i in range(n_params):
            name = f"layer{i // 3}.{i % 3}.conv.weight"
            size = 64 * 64 * 9 if i % 2 else 32 * 3 * 9
            fragility = 4 + ((i * 7 + seed) % 11)
            for s in levels:
                point = curve_point(name, s, fragility)
                half = point["top1"] - point["top1_low"]
                point.update(nnz=size - int(s * size), group=group, top5_low=point["top5"] - half,
                             top5_high=min(100.0, point["top5"] + half))
                if group != "element":
                    # the whole model's MACs with this layer's filters removed (each layer owns a share)
                    share = 1_000_000 * (2 * (i + 1)) / (n_params * (n_params + 1))
                    point["macs"] = int(1_000_000 - share * s)
                    point["params_left"] = int(50_000 - 10_000 * s)
                repo.upsert_point(session, job.id, point, shard=0, worker="synthetic", param_index=i)
        session.commit()
        return job.id


def insert_job(factory: Any, kind: str, spec: dict[str, Any], *, status: str = "queued", **fields: Any) -> int:
    """A job of any kind in any state, written straight into the store. Its shards are marked done so no
    runner ever picks it up (the page, not a runner, is under test); ``fields`` are Job columns."""
    with factory() as session:
        job = repo.create_job(session, kind=kind, spec=spec, shards=1)
        job.status = status
        if status != "queued":
            job.started_at = utcnow()
        for key, value in fields.items():
            setattr(job, key, value)
        session.flush()
        for shard in session.query(JobShard).filter(JobShard.job_id == job.id):
            shard.status = "succeeded"
        session.commit()
        return job.id


def update_job(factory: Any, job_id: int, **fields: Any) -> None:
    """Change a synthetic job's columns (status, progress, worker...), as a runner would."""
    with factory() as session:
        job = session.get(Job, job_id)
        for key, value in fields.items():
            setattr(job, key, value)
        if fields.get("status") in ("succeeded", "failed", "cancelled"):
            job.finished_at = utcnow()
        session.commit()


def curve_point(parameter: str, sparsity: float, fragility: float, *, samples: int = 500) -> dict[str, Any]:
    """One point of a plausible curve: top1 falls off a cliff near 75 % sparsity, faster when fragile."""
    top1 = 98.0 - 90.0 / (1 + math.exp(-fragility * (sparsity - 0.75)))
    half = 1.96 * math.sqrt(max(top1 * (100 - top1), 1.0) / samples) / 2
    return {"parameter": parameter, "sparsity": sparsity, "top1": top1, "top5": min(100.0, top1 + 1.5),
            "loss": 0.05 + (98.0 - top1) / 20, "samples": samples, "nnz": 1000 - int(sparsity * 1000),
            "top1_low": top1 - half, "top1_high": min(100.0, top1 + half), "group": "element", "measured": True}


@contextmanager
def jobs_cleaned_up(factory: Any, data_dir: Path) -> Iterator[None]:
    """Delete every job made inside the block: the browser tests share one server, and a test that counts
    (say) the cancelled jobs must not see another test's."""
    with factory() as session:
        first = session.scalar(select(func.max(Job.id))) or 0
    try:
        yield
    finally:
        with factory() as session:
            for job in session.scalars(select(Job).where(Job.id > first)).all():
                repo.delete_job(session, job, data_dir)
            session.commit()
