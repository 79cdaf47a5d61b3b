"""A bounded pool of warm helper processes for the computations the API needs from pruning_core.

pruning_core imports torch and the API process must not, so those computations run in
``python -m worker.helpers --serve`` processes. Starting one per request (as this module once did)
cost 0.2-7 s and up to ~600 MB each, without bound: 30 requests started 31 processes and ~8 GB. Now:

- at most ``PRUNESCOPE_COMPUTE_WORKERS`` helpers exist; each is started on first need and reused
  (whatever it imported, torch included, is imported once), serving one call at a time over its
  pipes, one JSON line each way;
- at most ``PRUNESCOPE_COMPUTE_QUEUE`` calls wait for a free helper; any call beyond that is answered
  at once with 503 and ``Retry-After`` (the server is busy, not broken);
- a call that runs past ``PRUNESCOPE_COMPUTE_TIMEOUT_S``, or whose helper's resident memory grows past
  ``PRUNESCOPE_COMPUTE_MEMORY_MB`` (read from /proc; RLIMIT_AS would break torch's import), has its
  helper killed, answers 503 naming the budget, and the helper is replaced on the next call.

Callers must not hold a SQL connection while they wait here (close or commit the session first), or
a burst of waiting requests exhausts the connection pool. The pool is generic: schedule checks,
previews, plans and upload scans all use it.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from fastapi import HTTPException

from api.shared.settings import Settings, get_settings

__all__ = ["HelperPool", "RETRY_AFTER_S", "helper_command", "pool", "run_helper"]

ROOT = Path(__file__).resolve().parents[1]
#: Seconds a client is told to wait (``Retry-After``) when the pool is full or a helper was stopped.
RETRY_AFTER_S = 2
_POLL_S = 0.02  # how often a running call's helper is checked for its time and memory budget


def helper_command() -> list[str]:
    """The helper process as the pool starts it."""
    return [sys.executable, "-m", "worker.helpers", "--serve"]


class _Broken(Exception):
    """A helper broke its call's budget or died: it is killed and its slot is freed."""


def _rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` from /proc (0 where /proc is unavailable: no memory budget there)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


class _Helper:
    """One helper process and the half-read line of its stdout."""

    def __init__(self, command: list[str]) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                                            if p),
               # Helpers do small computations on a shared machine: one thread each keeps them cheap.
               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "PRUNESCOPE_HELPER_PARENT": str(os.getpid())}  # it exits if this process dies
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, env=env,
                                     bufsize=0)
        self.pending = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()

    def call(self, request: bytes, timeout_s: float, memory_bytes: int) -> bytes:
        """Send one request line and return the answer line, within the time and memory budgets."""
        deadline = time.monotonic() + timeout_s
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(request)
        except OSError as exc:
            raise _Broken(f"the helper process could not be reached ({exc})") from None
        fd = self.proc.stdout.fileno()
        chunks = [self.pending]
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Broken(f"took longer than the {timeout_s:g} s budget of one computation "
                              "(PRUNESCOPE_COMPUTE_TIMEOUT_S)")
            readable, _, _ = select.select([fd], [], [], min(remaining, _POLL_S))
            if readable:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    code = self.proc.wait()
                    raise _Broken(f"the helper process exited (code {code}) before answering")
                chunks.append(chunk)
                if b"\n" in chunk:
                    line, _, self.pending = b"".join(chunks).partition(b"\n")
                    return line
            rss = _rss_bytes(self.pid)
            if rss > memory_bytes:
                raise _Broken(f"the helper grew to {rss / 2**20:,.0f} MB, over the {memory_bytes / 2**20:,.0f} MB "
                              "memory budget of one computation (PRUNESCOPE_COMPUTE_MEMORY_MB)")


def _unavailable(message: str) -> HTTPException:
    return HTTPException(503, message, headers={"Retry-After": str(RETRY_AFTER_S)})


class HelperPool:
    """At most ``workers`` helper processes, at most ``waiting`` calls queued for them; see the module doc."""

    def __init__(self, workers: int, waiting: int, timeout_s: float, memory_mb: float,
                 command: list[str] | None = None) -> None:
        self.workers, self.waiting, self.timeout_s = workers, waiting, timeout_s
        self.memory_bytes = int(memory_mb * 2**20)
        self.command = command or helper_command()
        # Free slots, the warmest helper first; None is a slot whose helper is not started (yet, or any more).
        self._free: queue.LifoQueue[_Helper | None] = queue.LifoQueue()
        for _ in range(workers):
            self._free.put(None)
        self._lock = threading.Lock()
        self._admitted = 0  # calls running or waiting
        self._running = 0
        self._helpers: set[_Helper] = set()
        self._closed = False

    def stats(self) -> dict[str, int]:
        """Counts for /healthz: the bound, helpers alive, calls running and calls waiting (no I/O)."""
        with self._lock:
            alive = sum(1 for h in self._helpers if h.alive())
            return {"workers": self.workers, "helpers": alive, "running": self._running,
                    "waiting": self._admitted - self._running, "queue": self.waiting}

    def call(self, name: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Run helper ``name`` on ``payload``; HTTPException 503 (with Retry-After) when the pool is full,
        no helper came free in time, or the helper broke a budget or failed."""
        with self._lock:
            if self._closed:
                raise _unavailable(f"{name}: the server is shutting down")
            if self._admitted >= self.workers + self.waiting:
                raise _unavailable(f"{name}: the server is busy ({self.workers} computations running and "
                                   f"{self.waiting} waiting, the limits PRUNESCOPE_COMPUTE_WORKERS and "
                                   f"PRUNESCOPE_COMPUTE_QUEUE); retry in {RETRY_AFTER_S} s")
            self._admitted += 1
        try:
            try:
                helper = self._free.get(timeout=self.timeout_s)
            except queue.Empty:
                raise _unavailable(f"{name}: the server is busy: no computation slot came free within "
                                   f"{self.timeout_s:g} s (PRUNESCOPE_COMPUTE_TIMEOUT_S); retry later") from None
            with self._lock:
                self._running += 1
            try:
                helper, line = self._run(helper, name, payload)
            finally:
                with self._lock:
                    self._running -= 1
                self._free.put(helper)
        finally:
            with self._lock:
                self._admitted -= 1
        try:
            answer = json.loads(line)
        except ValueError:
            raise HTTPException(503, f"{name}: the helper answered with something not JSON: {line[:80]!r}") from None
        if "failure" in answer:
            raise HTTPException(503, f"{name}: the helper failed: {answer['failure']}")
        return answer["result"]

    def _run(self, helper: _Helper | None, name: str, payload: dict[str, Any]) -> tuple[_Helper | None, bytes]:
        """One call on ``helper`` (started first if need be); returns the slot's helper afterwards (None
        if it was killed) and the answer line."""
        request = (json.dumps({"name": name, "payload": payload}) + "\n").encode()
        if helper is None or not helper.alive():
            helper = self._start(helper)
        try:
            return helper, helper.call(request, self.timeout_s, self.memory_bytes)
        except _Broken as exc:
            self._stop(helper)
            raise _unavailable(f"{name}: {exc}; the computation was stopped") from None
        except BaseException:
            self._stop(helper)  # interrupted mid-call: its pipe state is unknown
            raise

    def _start(self, dead: _Helper | None) -> _Helper:
        if dead is not None:
            self._stop(dead)
        helper = _Helper(self.command)
        with self._lock:
            self._helpers.add(helper)
        return helper

    def _stop(self, helper: _Helper) -> None:
        helper.kill()
        with self._lock:
            self._helpers.discard(helper)

    def close(self) -> None:
        """Stop every helper (they also exit by themselves when this process dies: their stdin closes)."""
        with self._lock:
            self._closed = True
            helpers = list(self._helpers)
        for helper in helpers:
            self._stop(helper)


_pool: HelperPool | None = None
_pool_lock = threading.Lock()


def pool(settings: Settings | None = None) -> HelperPool:
    """The process-wide pool, sized by the settings the first time it is needed."""
    global _pool
    with _pool_lock:
        if _pool is None:
            cfg = settings or get_settings()
            _pool = HelperPool(cfg.compute_workers, cfg.compute_queue, cfg.compute_timeout_s, cfg.compute_memory_mb)
            atexit.register(_pool.close)
        return _pool


def run_helper(name: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Run a ``worker.helpers`` function in the pool. Release any SQL session before calling: this waits."""
    return pool().call(name, payload)
