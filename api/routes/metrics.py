"""``GET /metrics``: Prometheus metrics of the service, guarded by the token like every route.

On each scrape, three aggregate queries on the store (jobs by kind and status; points stored, queued
shards and the shard-duration histogram; live workers and their devices) and, with a broker, the queue's
length in Redis. HTTP request latencies are observed by :class:`RequestMetrics` per route template
(``/api/v1/jobs/{job_id}``, never the raw path, so label values stay few). Each app has its own
registry: several apps in one process (tests, ``Client.local``) never share counters.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from sqlalchemy import Float, case, cast, func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.shared.settings import Settings
from api.store import repo
from api.store.models import JOB_KINDS, JOB_STATUSES, Job, JobShard, SensitivityPointRow

log = logging.getLogger(__name__)
router = APIRouter(tags=["metrics"])
#: Upper bounds (seconds) of the shard-duration histogram: a digits shard takes seconds, an ImageNet one hours.
SHARD_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0)


def _seconds(start: Any, end: Any, dialect: str) -> Any:
    """``end - start`` in seconds as SQL, on SQLite and PostgreSQL."""
    if dialect == "sqlite":
        return (func.julianday(end) - func.julianday(start)) * 86400.0
    return cast(func.extract("epoch", end - start), Float)


class StoreCollector:
    """The store's state as Prometheus metrics, read at scrape time."""

    def __init__(self, factory: sessionmaker[Session], settings: Settings, dispatcher: Any) -> None:
        self.factory, self.settings, self.dispatcher = factory, settings, dispatcher

    def collect(self) -> Iterator[Metric]:
        with self.factory() as s:
            jobs = s.execute(select(Job.kind, Job.status, func.count()).group_by(Job.kind, Job.status)).all()
            yield from self._jobs(jobs)
            yield from self._shards(s)
            workers = repo.live_capabilities(s, stale_s=self.settings.heartbeat_stale_s)
        live = GaugeMetricFamily("prunescope_workers_live", "Workers whose capabilities are fresh")
        live.add_metric([], len(workers))
        yield live
        devices = GaugeMetricFamily("prunescope_worker_devices", "Devices of each live worker (1 per device)",
                                    labels=["worker", "device"])
        for w in workers:
            for device in w.devices or []:
                devices.add_metric([w.worker, str(device)], 1)
        yield devices
        depth = self._broker_depth()
        if depth is not None:
            broker = GaugeMetricFamily("prunescope_broker_queue_depth", "Messages waiting in the broker's queue",
                                       labels=["queue"])
            broker.add_metric([self.settings.queue], depth)
            yield broker

    def _jobs(self, rows: list[Any]) -> Iterator[Metric]:
        counts = {(kind, status): 0 for kind in JOB_KINDS for status in JOB_STATUSES}
        counts.update({(kind, status): n for kind, status, n in rows})
        family = GaugeMetricFamily("prunescope_jobs", "Jobs in the store by kind and status",
                                   labels=["kind", "status"])
        for (kind, status), n in sorted(counts.items()):
            family.add_metric([kind, status], n)
        yield family

    def _shards(self, s: Session) -> Iterator[Metric]:
        ended = JobShard.finished_at.is_not(None) & JobShard.started_at.is_not(None)
        seconds = _seconds(JobShard.started_at, JobShard.finished_at, s.get_bind().dialect.name)
        row = s.execute(select(
            select(func.count()).select_from(SensitivityPointRow).scalar_subquery(),
            func.count().filter(JobShard.status == "queued"),
            func.count().filter(JobShard.status == "running"),
            func.count().filter(ended),
            func.coalesce(func.sum(case((ended, seconds))), 0.0),
            *[func.count().filter(ended & (seconds <= bound)) for bound in SHARD_BUCKETS],
        ).select_from(JobShard)).one()
        points, queued, running, count, total, *buckets = row
        stored = CounterMetricFamily("prunescope_points_stored", "Sensitivity points in the store")
        stored.add_metric([], points)
        yield stored
        depth = GaugeMetricFamily("prunescope_shards", "Shards queued or running (the store's queue depth)",
                                  labels=["status"])
        depth.add_metric(["queued"], queued)
        depth.add_metric(["running"], running)
        yield depth
        histogram = HistogramMetricFamily("prunescope_shard_duration_seconds", "Wall time of finished shards")
        finite = [(str(b), n) for b, n in zip(SHARD_BUCKETS, buckets, strict=True)]
        histogram.add_metric([], [*finite, ("+Inf", count)],
                             float(total))
        yield histogram

    def _broker_depth(self) -> int | None:
        depth = getattr(self.dispatcher, "queue_depth", None)
        if depth is None:  # the embedded executor: no broker
            return None
        try:
            return depth()
        except Exception:  # noqa: BLE001 - a broker outage shows as a missing series, /healthz says why
            log.warning("broker queue depth unavailable at %s", self.dispatcher.broker_url)
            return None


def _route(scope: Scope) -> str:
    """The matched route's template; mounts (the dashboard's files) by their path; else ``unmatched``."""
    included = scope.get("effective_route_context")  # FastAPI >= 0.16x: the route with its router's prefix
    if getattr(included, "path", None):
        return included.path
    route = scope.get("route")
    if route is not None and getattr(route, "path", None) is not None:
        # the route's own template lacks its router's prefix (/api/v1): the path's part its regex does not match
        path, regex = scope.get("path", ""), getattr(route, "path_regex", None)
        for cut in (i for i, c in enumerate(path) if c == "/"):
            if regex is not None and regex.match(path[cut:]):
                return path[:cut] + route.path
        return route.path
    return "static" if scope.get("endpoint") is not None else "unmatched"


class RequestMetrics:
    """Observes each HTTP request's duration by method, route template and status code."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app, self.histogram = app, histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.histogram.labels(scope["method"], _route(scope), str(status)).observe(time.perf_counter() - start)


@router.get("/metrics", response_class=Response, include_in_schema=True)
def get_metrics(request: Request) -> Response:
    """Prometheus text exposition of jobs, points, shards, queue depth, workers and request latencies."""
    return Response(generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)


def install(app: FastAPI) -> None:
    """The route, this app's registry with the store collector, and the latency middleware."""
    registry = CollectorRegistry()
    registry.register(StoreCollector(app.state.session_factory, app.state.settings, app.state.dispatcher))
    histogram = Histogram("prunescope_http_request_duration_seconds", "HTTP request latency by route",
                          ["method", "route", "status"], registry=registry)
    app.state.metrics_registry = registry
    app.include_router(router)
    app.add_middleware(RequestMetrics, histogram=histogram)
