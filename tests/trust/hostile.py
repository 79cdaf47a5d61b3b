"""One way to send a hostile request to a live server and prove it did no harm (issue 13).

``send_hostile`` runs the request while a side thread polls ``/healthz``; it returns the answer, how
long it took and the slowest health answer seen while it was in flight, so every trust test asserts
the same three things: a 4xx, within 1 s, and the server kept answering within 1 s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

#: The promise of issue 13: the refusal and every health answer meanwhile within this many seconds.
FAST_S = 1.0


@dataclass
class Outcome:
    """What one hostile request did: its response, its duration and the health answers meanwhile."""

    response: httpx.Response | None
    seconds: float
    health_s: list[float] = field(default_factory=list)
    health_failures: list[str] = field(default_factory=list)

    @property
    def worst_health_s(self) -> float:
        return max(self.health_s, default=0.0)

    def assert_refused(self, status: int | tuple[int, ...] = (400, 409, 413, 422), *, names: tuple[str, ...] = (),
                       within_s: float = FAST_S) -> None:
        """A 4xx in ``status``, within ``within_s``, whose detail names every string in ``names``; and
        ``/healthz`` answered within FAST_S throughout."""
        assert self.response is not None, "the hostile request got no answer"
        expected = (status,) if isinstance(status, int) else status
        assert self.response.status_code in expected, (self.response.status_code, self.response.text[:500])
        detail = self.response.text
        for name in names:
            assert name in detail, f"{name!r} not named in {detail[:500]!r}"
        assert self.seconds < within_s, f"refused after {self.seconds:.2f} s (limit {within_s} s)"
        self.assert_healthy()

    def assert_healthy(self) -> None:
        assert not self.health_failures, self.health_failures[:3]
        assert self.worst_health_s < FAST_S, f"/healthz took {self.worst_health_s:.2f} s while the request ran"


class HealthProbe:
    """Polls ``GET {base}/healthz`` every ``period_s`` from a thread, recording each answer's time."""

    def __init__(self, base: str, period_s: float = 0.1) -> None:
        self.base, self.period_s = base.rstrip("/"), period_s
        self.seconds: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)

    def _loop(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set():
                start = time.perf_counter()
                try:
                    status = client.get(f"{self.base}/healthz").status_code
                    if status != 200:
                        self.failures.append(f"/healthz answered {status}")
                except httpx.HTTPError as exc:
                    self.failures.append(f"/healthz: {type(exc).__name__}: {exc}")
                self.seconds.append(time.perf_counter() - start)
                self._stop.wait(self.period_s)


def send_hostile(base: str, request: Callable[[httpx.Client], httpx.Response], *,
                 timeout_s: float = 30.0) -> Outcome:
    """Run ``request(client)`` against the server at ``base`` (``http://host:port``) while probing health.

    The probe runs a little before and after the request, so a server that freezes just after
    answering is caught too."""
    with HealthProbe(base) as probe, httpx.Client(base_url=base, timeout=timeout_s) as client:
        time.sleep(0.2)
        start = time.perf_counter()
        try:
            response: httpx.Response | None = request(client)
        except httpx.HTTPError:
            response = None
        seconds = time.perf_counter() - start
        time.sleep(0.5)
    return Outcome(response, seconds, probe.seconds, probe.failures)
