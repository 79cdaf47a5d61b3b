"""API latency under load: p50/p99 of job submission and of reading a 2,000-point result, with 50
concurrent clients on loopback, on SQLite and on PostgreSQL in one run. The server is a real
`prunescope serve --broker` subprocess (jobs are enqueued to a private Redis queue nobody consumes, so
only the API is measured); PostgreSQL gets a scratch database, dropped afterwards.

    python bench/api.py [--clients 50] [--requests 500] [--postgres URL] [--broker redis://...] [--workers N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
SPEC = {"kind": "sensitivity", "spec": {"model": "resnet20-cifar", "dataset": "synthetic", "levels": "0:0.5:0.1"}}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _seed(db_url: str, points: int) -> int:
    """A succeeded sensitivity job with ``points`` points, written straight to the store."""
    sys.path.insert(0, str(ROOT))
    from api.store import make_engine, make_session_factory, migrate, repo

    engine = make_engine(db_url)
    migrate(engine)
    with make_session_factory(engine)() as s:
        job = repo.create_job(s, kind="sensitivity", spec=SPEC["spec"], shards=1)
        s.commit()
        levels = [round(i / 20, 10) for i in range(20)]
        for i in range(points // len(levels)):
            for lv in levels:
                repo.upsert_point(s, job.id, {"parameter": f"layer{i}.weight", "sparsity": lv, "top1": 90 - lv,
                                              "top5": 99.0, "loss": 0.2 + lv, "samples": 10000, "nnz": 1000},
                                  shard=0, worker="bench", param_index=i)
        s.commit()
        assert repo.claim_shard(s, job.id, 0, worker="bench", stale_s=60)
        repo.finish_shard(s, job.id, 0, status="succeeded")  # a finished result, as users read them
    engine.dispose()
    return job.id


async def _measure(clients: int, total: int, call) -> list[float]:  # noqa: ANN001 - an async callable
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def one_client() -> None:
            while not queue.empty():
                queue.get_nowait()
                start = time.perf_counter()
                resp = await call(client)
                latencies.append((time.perf_counter() - start) * 1000)
                resp.raise_for_status()

        await asyncio.gather(*(one_client() for _ in range(clients)))
    return latencies


def _pcts(values: list[float]) -> tuple[float, float]:
    qs = statistics.quantiles(values, n=100, method="inclusive")
    return round(statistics.median(values), 2), round(qs[98], 2)


def _run_backend(args: argparse.Namespace, db_url: str) -> dict[str, float]:
    """Start a server on ``db_url``, measure both cases, stop it; the figures keyed by case."""
    tmp = Path(tempfile.mkdtemp(prefix="prunescope-bench-"))
    db_url = db_url or f"sqlite:///{tmp / 'prunescope.db'}"
    queue = f"prunescope-bench-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PRUNESCOPE_DATA_DIR": str(tmp), "PRUNESCOPE_DATABASE_URL": db_url, "PRUNESCOPE_QUEUE": queue,
           "PRUNESCOPE_SENSITIVITY_SHARDS": "1"}
    env.pop("PRUNESCOPE_TOKEN", None)
    job_id = _seed(db_url, args.points)
    port = _port()
    base = f"http://127.0.0.1:{port}/api/v1"
    server = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--no-demo",
                               "--broker", args.broker, "--workers", str(args.workers)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL)
    try:
        for _ in range(150):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            raise SystemExit("the server did not come up (is Redis running at --broker?)")
        n_points = len(httpx.get(f"{base}/jobs/{job_id}/points", timeout=30).json())  # also warms the server
        submit = asyncio.run(_measure(args.clients, args.requests, lambda c: c.post(f"{base}/jobs", json=SPEC)))
        read = asyncio.run(_measure(args.clients, args.requests, lambda c: c.get(f"{base}/jobs/{job_id}/points")))
    finally:
        server.terminate()
        server.wait(10)
        import redis

        redis.Redis.from_url(args.broker).delete(queue)
    backend = "postgresql" if db_url.startswith("postgresql") else "sqlite"
    s50, s99 = _pcts(submit)
    r50, r99 = _pcts(read)
    print(f"store {backend}, {args.clients} clients, {args.requests} requests per case, {args.workers} server "
          "process(es), loopback")
    print(f"  submit job              p50 {s50:8.2f} ms   p99 {s99:8.2f} ms")
    print(f"  read {n_points}-point result  p50 {r50:8.2f} ms   p99 {r99:8.2f} ms", flush=True)
    return {f"{backend} submit p50 ms": s50, f"{backend} submit p99 ms": s99,
            f"{backend} read {n_points} points p50 ms": r50, f"{backend} read {n_points} points p99 ms": r99}


@contextlib.contextmanager
def _scratch_database(url: str) -> Iterator[str]:
    """A fresh PostgreSQL database next to ``url``'s, dropped at the end."""
    import psycopg

    base, _, _ = url.rpartition("/")
    name = f"prunescope_bench_{uuid.uuid4().hex[:8]}"
    admin = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=500, help="requests per case")
    parser.add_argument("--points", type=int, default=2000)
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test",
                        help="a PostgreSQL database to create the scratch database from ('' skips PostgreSQL)")
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--workers", type=int, default=1, help="server processes (uvicorn workers)")
    args = parser.parse_args()
    figures = _run_backend(args, "")
    if args.postgres:
        with _scratch_database(args.postgres) as url:
            figures.update(_run_backend(args, url))
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
