"""Sustained load on the API: N concurrent clients for a fixed time, reading results and submitting
jobs against a real ``prunescope serve --broker`` subprocess on loopback (jobs go to a private Redis
queue nobody consumes, so only the API and its store are measured). Any non-2xx answer or transport
error is counted; the last line is one JSON object.

    python -m bench.load [--clients 100] [--seconds 20] [--store sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/load.py` would otherwise import bench/api.py as `api`

import httpx  # noqa: E402

from bench.api import SPEC, _port, _seed  # noqa: E402 - shared with the latency benchmark

# (weight, name): what a dashboard-heavy population does; one request in ten submits a job.
MIX = [(40, "read points"), (20, "list jobs"), (20, "get job"), (10, "list models"), (10, "submit job")]


@contextlib.contextmanager
def _store(kind: str, tmp: Path, pg_admin: str) -> Iterator[str]:
    """A fresh store: SQLite in the temp dir, or a PostgreSQL database created and dropped here."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'prunescope.db'}"
        return
    import psycopg

    name = f"prunescope_load_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    params = dict(p.split("=", 1) for p in pg_admin.split())
    try:
        yield f"postgresql+psycopg://{params.get('user', 'postgres')}@{params.get('host', '127.0.0.1')}:" \
              f"{params.get('port', '5432')}/{name}"
    finally:
        with psycopg.connect(pg_admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _drive(base: str, clients: int, seconds: float, job_id: int) -> dict[str, list[float]]:
    """Each client loops until the deadline, picking a request from MIX; latencies in ms per kind,
    errors under the key 'errors' as (kind, status or exception) strings."""
    calls = {
        "read points": lambda c: c.get(f"{base}/jobs/{job_id}/points"),
        "list jobs": lambda c: c.get(f"{base}/jobs", params={"limit": 20}),
        "get job": lambda c: c.get(f"{base}/jobs/{job_id}"),
        "list models": lambda c: c.get(f"{base}/models"),
        "submit job": lambda c: c.post(f"{base}/jobs", json=SPEC),
    }
    kinds, weights = [k for _, k in MIX], [w for w, _ in MIX]
    results: dict[str, list] = {k: [] for k in calls} | {"errors": []}
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def one(seed: int) -> None:
            rng = random.Random(seed)
            while time.perf_counter() < deadline:
                kind = rng.choices(kinds, weights)[0]
                start = time.perf_counter()
                try:
                    resp = await calls[kind](client)
                    ok = resp.is_success
                    why = f"HTTP {resp.status_code}: {resp.text[:200]}"
                except httpx.HTTPError as exc:
                    ok, why = False, f"{type(exc).__name__}: {exc}"
                results[kind].append((time.perf_counter() - start) * 1000)
                if not ok:
                    results["errors"].append(f"{kind}: {why}")

        await asyncio.gather(*(one(i) for i in range(clients)))
    return results


def _pcts(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        return {"n": len(values)}
    qs = statistics.quantiles(values, n=100, method="inclusive")
    return {"n": len(values), "p50_ms": round(statistics.median(values), 1), "p99_ms": round(qs[98], 1)}


def _wait_up(base: str, server: subprocess.Popen) -> None:
    for _ in range(300):
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit("the server did not come up (is Redis running at --broker?)")


def run(store: str, clients: int, seconds: float, points: int, broker: str, pg_admin: str) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="prunescope-load-"))
    queue = f"prunescope-load-{uuid.uuid4().hex[:8]}"
    with _store(store, tmp, pg_admin) as db_url:
        job_id = _seed(db_url, points)
        env = {**os.environ, "PRUNESCOPE_DATA_DIR": str(tmp), "PRUNESCOPE_DATABASE_URL": db_url,
               "PRUNESCOPE_QUEUE": queue, "PRUNESCOPE_SENSITIVITY_SHARDS": "1"}
        env.pop("PRUNESCOPE_TOKEN", None)
        port = _port()
        base = f"http://127.0.0.1:{port}/api/v1"
        server = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--no-demo",
                                   "--broker", broker], cwd=ROOT, env=env)
        try:
            _wait_up(base, server)
            started = time.perf_counter()
            results = asyncio.run(_drive(base, clients, seconds, job_id))
            elapsed = time.perf_counter() - started
        finally:
            server.terminate()
            server.wait(30)
            import redis

            redis.Redis.from_url(broker).delete(queue)
    errors = results.pop("errors")
    everything = [v for values in results.values() for v in values]
    return {"store": store, "clients": clients, "seconds": round(elapsed, 1), "requests": len(everything),
            "throughput_rps": round(len(everything) / elapsed, 1), **_pcts(everything),
            "per_kind": {k: _pcts(v) for k, v in results.items()}, "errors": len(errors),
            "error_samples": sorted(set(errors))[:5]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--points", type=int, default=400, help="points in the result the clients read")
    parser.add_argument("--store", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--pg-admin", default="host=127.0.0.1 port=5432 user=postgres dbname=test",
                        help="libpq DSN used to create and drop the temporary PostgreSQL database")
    args = parser.parse_args()
    stores = ["sqlite", "postgresql"] if args.store == "both" else [args.store]
    reports = [run(s, args.clients, args.seconds, args.points, args.broker, args.pg_admin) for s in stores]
    for r in reports:
        print(f"{r['store']:>10}: {r['clients']} clients, {r['seconds']} s, {r['requests']} requests, "
              f"{r['throughput_rps']} req/s, p50 {r.get('p50_ms')} ms, p99 {r.get('p99_ms')} ms, {r['errors']} errors")
        for kind, p in r["per_kind"].items():
            print(f"{'':>12}{kind:<12} n={p['n']:<6} p50 {p.get('p50_ms')} ms  p99 {p.get('p99_ms')} ms")
        for sample in r["error_samples"]:
            print(f"{'':>12}error: {sample}")
    print(json.dumps({"load": reports}))
    return 1 if any(r["errors"] for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
