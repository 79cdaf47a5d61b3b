"""Scale-out of the distributed service: one sensitivity sweep on 1 and on 2 `prunescope worker` processes,
each pinned to its own core with one torch thread, through Redis and PostgreSQL: points per second.

A real `prunescope serve --broker` subprocess (on the cores the workers leave, if any) and real workers (native
processes, as tests/service/stack.py starts them) on a scratch PostgreSQL database, dropped afterwards, and a
private Redis queue. Each worker count gets fresh workers; once they say ready and are idle (their startup
facts published), the sweep runs once ``cold`` (the first job a worker runs pays what it does once per
process) and ``--repeats`` times ``warm``: ResNet-20, element, synthetic data, 22 weights x 10 levels = 220
points, the server's 4 shards. Points per second come from the store: the job's points over first claim ->
last point stored, and over submit -> done. Every run must store the same points (bench/rows.py's check).
Per run a line and its shards (who ran them, when, how long); the last line is one JSON object with the
figures and the ratios (2 workers over 1), cold and warm.

    .venv/bin/python bench/scaleout.py [--workers 1,2] [--shards 4] [--levels 0:1:0.1] [--n 256] [--repeats 1]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]  # the project's ``api`` package before bench/api.py

from rows import Row, same_rows  # noqa: E402

from tests.live import free_port  # noqa: E402


def _bench_api() -> Any:
    """bench/api.py (its scratch PostgreSQL database), loaded by path: ``api`` is the project's package."""
    spec = importlib.util.spec_from_file_location("bench_api", ROOT / "bench" / "api.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_api"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


BENCH_API = _bench_api()


class Service:
    """The server and its workers as native processes, each logged to a file and killed by its own pid."""

    def __init__(self, db_url: str, broker: str, tmp: Path, cores: list[int]) -> None:
        self.tmp, self.cores, self.broker = tmp, cores, broker
        self.queue = f"prunescope-scaleout-{uuid.uuid4().hex[:8]}"
        self.env = {**os.environ, "PRUNESCOPE_DATA_DIR": str(tmp / "data"), "PRUNESCOPE_DATABASE_URL": db_url,
                    "PRUNESCOPE_BROKER_URL": broker, "PRUNESCOPE_QUEUE": self.queue, "PRUNESCOPE_TORCH_THREADS": "1",
                    "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        self.env.pop("PRUNESCOPE_TOKEN", None)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api/v1"
        self.server: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []

    def _start(self, name: str, args: list[str], core: int | None) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        pin = (lambda: os.sched_setaffinity(0, {core})) if core is not None else None
        return subprocess.Popen([sys.executable, "-m", "api.cli", *args], cwd=ROOT, env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, preexec_fn=pin)

    def serve(self, workers: int) -> None:
        """The API on the cores the workers leave free (all of them when none is left)."""
        free = self.cores[workers:]
        self.server = self._start("serve", ["serve", "--port", str(self.port), "--no-demo", "--broker", self.broker],
                                  None)
        if free:
            os.sched_setaffinity(self.server.pid, set(free))
        for _ in range(300):
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"the server did not come up:\n{(self.tmp / 'serve.log').read_text()[-3000:]}")

    def start_workers(self, count: int) -> None:
        self.workers = [self._start(f"worker-{count}-{i}", ["worker"], self.cores[i % len(self.cores)])
                        for i in range(count)]

    def stop_workers(self) -> None:
        for proc in self.workers:
            proc.kill()
            proc.wait(10)
        self.workers = []

    def stop(self) -> None:
        self.stop_workers()
        if self.server is not None:
            self.server.kill()
            self.server.wait(10)
        import redis

        redis.Redis.from_url(self.broker).delete(self.queue)

    def submit(self, spec: dict[str, Any]) -> int:
        r = httpx.post(f"{self.url}/jobs", json={"kind": "sensitivity", "spec": spec}, timeout=30)
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def wait(self, job_id: int, timeout_s: float = 1800) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            job = httpx.get(f"{self.url}/jobs/{job_id}", timeout=10).json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                if job["status"] != "succeeded":
                    raise SystemExit(f"job {job_id} {job['status']}: {job.get('error')}")
                return job
            time.sleep(0.25)
        raise SystemExit(f"job {job_id} still running after {timeout_s} s")

    def settle(self, quiet_s: float = 1.0, timeout_s: float = 60) -> None:
        """Wait until the workers are idle (their startup work, e.g. publishing facts, done)."""
        import psutil

        procs = [psutil.Process(w.pid) for w in self.workers]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            before = [sum(p.cpu_times()[:2]) for p in procs]
            time.sleep(quiet_s)
            if all(sum(p.cpu_times()[:2]) - b < 0.05 * quiet_s for p, b in zip(procs, before, strict=True)):
                return


def measure(db_url: str, job_id: int) -> dict[str, Any]:
    """The job's timeline from the store: points, first claim, last point, submit, done, and its shards."""
    from sqlalchemy import select

    from api.store import make_engine, make_session_factory
    from api.store.models import Job, JobShard, SensitivityPointRow

    engine = make_engine(db_url)
    try:
        with make_session_factory(engine)() as s:
            job = s.get(Job, job_id)
            shards = s.scalars(select(JobShard).where(JobShard.job_id == job_id).order_by(JobShard.index)).all()
            points = s.scalars(select(SensitivityPointRow).where(SensitivityPointRow.job_id == job_id)
                               .order_by(SensitivityPointRow.param_index, SensitivityPointRow.sparsity)).all()
            claim = min(sh.started_at for sh in shards)
            last = max(p.created_at for p in points)
            rows: list[Row] = [(p.parameter, p.sparsity, p.top1, p.top5, p.loss) for p in points]
            return {
                "points": len(points), "rows": rows, "claim_s": (last - claim).total_seconds(),
                "submit_s": (job.finished_at - job.created_at).total_seconds(),
                "shards": [(sh.index, (sh.worker or "?").split(":")[1], (sh.started_at - claim).total_seconds(),
                            (sh.finished_at - sh.started_at).total_seconds(),
                            sum(1 for p in points if p.shard == sh.index)) for sh in shards],
            }
    finally:
        engine.dispose()


def run_case(service: Service, db_url: str, workers: int, spec: dict[str, Any], repeats: int) -> dict[str, list]:
    """The sweep on ``workers`` fresh workers, once they are up and idle (``cold``: the first job they run pays
    what a worker does once, imports and store included), then ``repeats`` times more (``warm``)."""
    service.start_workers(workers)
    try:
        for i in range(len(service.workers)):
            log = service.tmp / f"worker-{workers}-{i}.log"
            for _ in range(600):
                if " ready." in log.read_text():
                    break
                time.sleep(0.2)
            else:
                raise SystemExit(f"worker {i} did not start:\n{log.read_text()[-3000:]}")
        service.settle()
        results: dict[str, list] = {"cold": [], "warm": []}
        for run in range(1 + repeats):
            job_id = service.submit(spec)
            service.wait(job_id)
            result = measure(db_url, job_id)
            results["cold" if run == 0 else "warm"].append(result)
            print(f"{workers} worker(s), job {job_id} ({'cold' if run == 0 else 'warm'}): {result['points']} points, "
                  f"first claim -> last point {result['claim_s']:.2f} s "
                  f"({result['points'] / result['claim_s']:.2f} points/s), submit -> done {result['submit_s']:.2f} s "
                  f"({result['points'] / result['submit_s']:.2f} points/s)")
            for index, pid, start, took, points in result["shards"]:
                print(f"    shard {index:2d}  worker pid {pid:>7}  start +{start:6.2f} s  took {took:6.2f} s  "
                      f"{points:4d} points")
            sys.stdout.flush()
        return results
    finally:
        service.stop_workers()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2", help="worker counts to compare, the first is the reference")
    parser.add_argument("--model", default="resnet20-cifar")
    parser.add_argument("--group", default="element")
    parser.add_argument("--levels", default="0:1:0.1", help="10 levels: 22 weights x 10 = 220 points")
    parser.add_argument("--n", type=int, default=256, help="synthetic test samples")
    parser.add_argument("--shards", type=int, default=None, help="the spec's shards (default: the server's)")
    parser.add_argument("--repeats", type=int, default=1, help="warm runs after the cold one (0: cold only)")
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test",
                        help="a PostgreSQL database to create the scratch database from")
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/15")
    args = parser.parse_args()
    counts = [int(c) for c in args.workers.split(",")]
    cores = sorted(os.sched_getaffinity(0))
    if max(counts) > len(cores):
        print(f"warning: {max(counts)} workers on {len(cores)} cores share cores", file=sys.stderr)
    spec: dict[str, Any] = {"model": args.model, "dataset": "synthetic", "dataset_options": {"n": args.n},
                            "levels": args.levels, "group": args.group}
    if args.shards:
        spec["shards"] = args.shards
    tmp = Path(tempfile.mkdtemp(prefix="prunescope-scaleout-"))
    figures: dict[str, float] = {}
    with BENCH_API._scratch_database(args.postgres) as db_url:
        service = Service(db_url, args.broker, tmp, cores)
        try:
            service.serve(max(counts))
            print(f"{args.model} {args.group}, levels {args.levels}, {args.n} synthetic samples, shards "
                  f"{args.shards or 'server default'}, {len(cores)} cores, logs in {tmp}")
            runs = {n: run_case(service, db_url, n, spec, args.repeats) for n in counts}
        finally:
            service.stop()
    reference = runs[counts[0]]["cold"][0]["rows"]
    for case in runs.values():
        for result in case["cold"] + case["warm"]:
            same_rows(reference, result["rows"])
    kinds = ["cold"] + (["warm"] if args.repeats else [])
    for n, case in runs.items():
        for kind in kinds:
            for key, what in (("claim_s", "claim to last point"), ("submit_s", "submit to done")):
                figures[f"{n} worker(s) {kind} points/s ({what})"] = round(
                    statistics.median(r["points"] / r[key] for r in case[kind]), 3)
    base = counts[0]
    for n in counts[1:]:
        for kind in kinds:
            for what in ("claim to last point", "submit to done"):
                figures[f"{n} vs {base} worker(s) {kind} ({what})"] = round(
                    figures[f"{n} worker(s) {kind} points/s ({what})"]
                    / figures[f"{base} worker(s) {kind} points/s ({what})"], 3)
    print("points identical across runs: yes")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
