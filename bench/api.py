"""API throughput and latency under load, on SQLite and on PostgreSQL in one run: requests/s, p50 and p99 of
``/healthz``, ``GET /jobs`` (a page of 50 out of a few hundred jobs), the cached gzipped 2,000-point read
and job submission, with 10 connections on loopback.

The load comes from a generator that is not the server's Python: ``wrk`` (a C generator) where it is
installed, else an open-loop generator in a process of its own (``--generate``), which sends at a fixed
rate and times each request from when it was due, so a slow server shows as latency, not as a slower
generator. (The asyncio client this bench used before ran beside the server on the same cores and mostly
measured its own queueing.) The server is a real ``prunescope serve --broker`` subprocess: jobs go to a
private Redis queue nobody consumes, so only the API is measured; PostgreSQL gets a scratch database,
dropped afterwards. Each case runs one second unmeasured first (a fresh server's first requests pay
for imports and cold caches). Timings are only comparable on a quiet machine. ``wrk``: ``apt-get install
wrk`` (``make wrk``).

    python bench/api.py [--seconds 5] [--connections 10] [--jobs 200] [--tool auto|wrk|python]
                        [--postgres URL] [--broker redis://...] [--workers N] [--only CASE_WORD...] [--rate N]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
SPEC = {"kind": "sensitivity", "spec": {"model": "resnet20-cifar", "dataset": "synthetic", "levels": "0:0.5:0.1"}}


@dataclass(frozen=True)
class Case:
    """One measured request; ``rps``/``p99_ms`` are the acceptance bounds of issue 20 (0: none)."""

    name: str
    method: str
    path: str
    rps: float = 0
    p99_ms: float = 0
    gzip: bool = False


def _cases(job_id: int, points: int) -> list[Case]:
    # submit comes last: it adds jobs, so the list measured before it is the seeded one
    return [Case("healthz", "GET", "/healthz", 1000, 20),
            Case("list 50 jobs", "GET", "/api/v1/jobs?limit=50", 1000, 50),
            Case(f"read {points} points (gzip)", "GET", f"/api/v1/jobs/{job_id}/points", 1500, 0, gzip=True),
            Case("submit job", "POST", "/api/v1/jobs")]


# ----------------------------------------------------------------------------------------------
# The generators: wrk, or an open-loop one in its own process
# ----------------------------------------------------------------------------------------------

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * _UNITS[unit]


def parse_wrk(output: str) -> dict[str, float]:
    """Requests/s, p50 and p99 (ms) and the failed count from ``wrk --latency`` output."""
    pct = dict(re.findall(r"^\s+(50|99)(?:\.0+)?%\s+(\S+)\s*$", output, re.M))
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    if rps is None or set(pct) != {"50", "99"}:
        raise RuntimeError(f"cannot read wrk's output:\n{output}")
    failed = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", output))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    failed += sum(int(n) for n in errors.groups()) if errors else 0
    return {"rps": float(rps.group(1)), "p50": _ms(pct["50"]), "p99": _ms(pct["99"]), "failed": failed}


def _wrk(base: str, case: Case, args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    command = ["wrk", f"-t{min(2, args.connections)}", f"-c{args.connections}", f"-d{args.seconds}s", "--latency"]
    if case.gzip:
        command += ["-H", "Accept-Encoding: gzip"]
    if case.method == "POST":
        script = tmp / "post.lua"
        script.write_text(f'wrk.method = "POST"\nwrk.body = {json.dumps(json.dumps(SPEC))}\n'
                          'wrk.headers["Content-Type"] = "application/json"\n')
        command += ["-s", str(script)]
    out = subprocess.run([*command, base + case.path], capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


def _python(base: str, case: Case, args: argparse.Namespace) -> dict[str, float]:
    """The open-loop generator, run as ``--generate`` in a process of its own."""
    rate = args.rate or case.rps or 300
    command = [sys.executable, __file__, "--generate", base + case.path, "--method", case.method,
               "--rate", str(rate), "--seconds", str(args.seconds), "--connections", str(args.connections)]
    if case.gzip:
        command.append("--gzip")
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def generate(url: str, method: str, rate: float, seconds: float, connections: int, gzip: bool) -> dict[str, float]:
    """Send ``rate`` requests/s for ``seconds`` over ``connections`` keep-alive connections, each request
    timed from when its schedule said to send it (open loop: no coordinated omission)."""
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    headers = {"Content-Type": "application/json", **({"Accept-Encoding": "gzip"} if gzip else {})}
    body = json.dumps(SPEC).encode() if method == "POST" else None
    total = max(connections, int(rate * seconds))
    latencies: list[float] = []
    failed = [0]
    lock = threading.Lock()
    start = time.perf_counter() + 0.05

    def connection(c: int) -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        mine, bad = [], 0
        for k in range(c, total, connections):
            due = start + k / rate
            if (wait := due - time.perf_counter()) > 0:
                time.sleep(wait)
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            mine.append((time.perf_counter() - due) * 1000)
            bad += resp.status >= 400
        with lock:
            latencies.extend(mine)
            failed[0] += bad

    threads = [threading.Thread(target=connection, args=(c,)) for c in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    qs = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"rps": len(latencies) / elapsed, "p50": statistics.median(latencies), "p99": qs[98], "failed": failed[0]}


# ----------------------------------------------------------------------------------------------
# The store and the server
# ----------------------------------------------------------------------------------------------

def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _seed(db_url: str, points: int, jobs: int) -> int:
    """``jobs`` jobs of every kind (some finished, named and scored, as a real list holds) and a succeeded
    sensitivity job with ``points`` points, written straight to the store; the latter's id."""
    sys.path.insert(0, str(ROOT))
    from api.store import make_engine, make_session_factory, migrate, repo

    engine = make_engine(db_url)
    migrate(engine)
    with make_session_factory(engine)() as s:
        for i in range(jobs):
            kind = ("sensitivity", "prune", "train")[i % 3]
            job = repo.create_job(s, kind=kind, spec=SPEC["spec"], shards=1)
            if i % 2:
                job.status = "succeeded"
                job.result = {"name": f"run {i}", "tags": ["bench"], "final": {"top1": 80.0 + i % 10},
                              "sparsity": 0.5, "baseline": {"top1": 91.0}}
        job = repo.create_job(s, kind="sensitivity", spec=SPEC["spec"], shards=1)
        s.commit()
        levels = [round(i / 20, 10) for i in range(20)]
        repo.upsert_points(s, job.id, (({"parameter": f"layer{i}.weight", "sparsity": lv, "top1": 90 - lv, "top5": 99.0,
                                         "loss": 0.2 + lv, "samples": 10000, "nnz": 1000}, i)
                                       for i in range(points // len(levels)) for lv in levels),
                           shard=0, worker="bench")
        s.commit()
        assert repo.claim_shard(s, job.id, 0, worker="bench", stale_s=60)
        repo.finish_shard(s, job.id, 0, status="succeeded")  # a finished result, as users read them
    engine.dispose()
    return job.id


def _get(url: str) -> bytes:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise OSError(f"{url}: {resp.status}")
        return body
    finally:
        conn.close()


def _run_backend(args: argparse.Namespace, db_url: str, tool: str) -> list[tuple[str, Case, dict[str, float]]]:
    """Start a server on ``db_url``, measure every case, stop it: ``(store, case, figures)`` rows."""
    tmp = Path(tempfile.mkdtemp(prefix="prunescope-bench-"))
    db_url = db_url or f"sqlite:///{tmp / 'prunescope.db'}"
    backend = "postgresql" if db_url.startswith("postgresql") else "sqlite"
    queue = f"prunescope-bench-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PRUNESCOPE_DATA_DIR": str(tmp), "PRUNESCOPE_DATABASE_URL": db_url, "PRUNESCOPE_QUEUE": queue,
           "PRUNESCOPE_SENSITIVITY_SHARDS": "1"}
    env.pop("PRUNESCOPE_TOKEN", None)
    job_id = _seed(db_url, args.points, args.jobs)
    port = _port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--no-demo",
                               "--broker", args.broker, "--workers", str(args.workers)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL)
    rows = []
    try:
        for _ in range(150):
            with contextlib.suppress(OSError):
                _get(f"{base}/healthz")
                break
            time.sleep(0.2)
        else:
            raise SystemExit("the server did not come up (is Redis running at --broker?)")
        n_points = len(json.loads(_get(f"{base}/api/v1/jobs/{job_id}/points")))  # also warms the cache
        assert len(json.loads(_get(f"{base}/api/v1/jobs?limit=50"))["items"]) == min(50, args.jobs + 1)
        for case in _cases(job_id, n_points):
            if args.only and not any(word in case.name for word in args.only):
                continue
            measure = _wrk if tool == "wrk" else (lambda b, c, a, _tmp: _python(b, c, a))
            measure(base, case, argparse.Namespace(**{**vars(args), "seconds": 1}), tmp)  # warm-up, not counted
            figures = measure(base, case, args, tmp)
            if figures["failed"]:
                raise SystemExit(f"{backend} {case.name}: {figures['failed']:.0f} requests failed")
            rows.append((backend, case, figures))
    finally:
        server.terminate()
        server.wait(10)
        import redis

        redis.Redis.from_url(args.broker).delete(queue)
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


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


def _table(rows: list[tuple[str, Case, dict[str, float]]], header: str) -> dict[str, float | str]:
    """Print the table; the figures (and whether each bound of the issue holds) for the JSON line."""
    print(header)
    print(f"  {'store':<11} {'case':<26} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}   bound")
    figures: dict[str, float | str] = {}
    for backend, case, f in rows:
        bound = " and ".join(b for b in (f">= {case.rps:,.0f}/s" if case.rps else "",
                                         f"p99 < {case.p99_ms:g} ms" if case.p99_ms else "") if b)
        met = (f["rps"] >= case.rps) and (not case.p99_ms or f["p99"] < case.p99_ms)
        verdict = f"{bound}: {'met' if met else 'MISSED'}" if bound else ""
        print(f"  {backend:<11} {case.name:<26} {f['rps']:>9,.0f} {f['p50']:>8.2f} {f['p99']:>8.2f}   {verdict}")
        key = f"{backend} {case.name}"
        figures.update({f"{key} req/s": round(f["rps"], 1), f"{key} p50 ms": round(f["p50"], 2),
                        f"{key} p99 ms": round(f["p99"], 2)})
        if bound:
            figures[f"{key} bound met"] = met
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="seconds per case")
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=200, help="jobs seeded besides the points job")
    parser.add_argument("--points", type=int, default=2000)
    parser.add_argument("--tool", choices=("auto", "wrk", "python"), default="auto",
                        help="auto: wrk when installed, else the open-loop generator in its own process")
    parser.add_argument("--rate", type=float, default=0,
                        help="open-loop generator only: requests/s offered (default: each case's bound, 300 without)")
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test",
                        help="a PostgreSQL database to create the scratch database from ('' skips PostgreSQL)")
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--workers", type=int, default=1, help="server processes (uvicorn workers)")
    parser.add_argument("--only", nargs="*", default=[], help="measure only the cases whose name has one of these")
    parser.add_argument("--generate", metavar="URL", help=argparse.SUPPRESS)  # the generator's own process
    parser.add_argument("--method", default="GET", help=argparse.SUPPRESS)
    parser.add_argument("--gzip", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        print(json.dumps(generate(args.generate, args.method, args.rate, args.seconds, args.connections, args.gzip)))
        return 0
    tool = "wrk" if args.tool == "wrk" or (args.tool == "auto" and shutil.which("wrk")) else "python"
    rows = _run_backend(args, "", tool)
    if args.postgres:
        with _scratch_database(args.postgres) as url:
            rows += _run_backend(args, url, tool)
    how = ("wrk (C)" if tool == "wrk" else "an open-loop Python generator in its own process, offering "
           + (f"{args.rate:g}/s" if args.rate else "each case's bound"))
    figures = _table(rows, f"{args.connections} connections, {args.seconds:g} s per case, {how}, "
                           f"{args.workers} server process(es), {args.jobs + 1} jobs, loopback")
    figures["generator"] = tool
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
