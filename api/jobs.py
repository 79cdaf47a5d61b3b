"""Job functions behind the job routes: validate and submit, list, cancel and delete, read points and snapshots.

No route is declared here (they are in :mod:`api.routes.jobs`, :mod:`api.routes.events` and
:mod:`api.routes.points`), so the planning routes, the dataset routes and the streams share one
definition of each rule. Errors are ``HTTPException``s that name the field and say how to fix it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NamedTuple

from fastapi import HTTPException, Query, Request, Response
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.deps import get_or_404, not_found
from api.schemas import DATA_FIELDS, JobOut, PruneJobCreate, SensitivityJobCreate, ShardOut, known_architecture
from api.shared.dispatch import Dispatcher, dispatch_job
from api.shared.settings import Settings
from api.store import repo
from api.store.models import (
    ACTIVE_STATUSES,
    JOB_KINDS,
    JOB_STATUSES,
    TERMINAL_STATUSES,
    DatasetEntry,
    Experiment,
    Job,
    JobShard,
    ModelEntry,
    utcnow,
)
from api.version import code_version
from pruning_core.dataset_options import check_dataset_options, dataset_task
from pruning_core.limits import LimitError
from pruning_core.names import (
    DATASET_NAMES,
    DATASET_PLUGIN_GROUP,
    DATASETS_WITH_ROOT,
    EXPORTED_ARCHITECTURE,
    PLUGIN_GROUP,
    TIMM_PREFIX,
    architecture,
    unsupported_reason,
)
from pruning_core.points import csv_text
from pruning_core.schedule import check_schedule

# Filters shared by GET /jobs and its stream GET /jobs/events.
StatusQuery = Annotated[str | None, Query(description=f"one of {', '.join(JOB_STATUSES)}")]
KindQuery = Annotated[str | None, Query(description=f"one of {', '.join(JOB_KINDS)}")]
ExperimentQuery = Annotated[int | None, Query(ge=1)]


def bad(field: str, message: str) -> HTTPException:
    """A 422 whose message starts with the field it is about."""
    return HTTPException(422, f"{field}: {message}")


def unknown_model(name: str) -> str:
    """Why a model name is refused: said the same way wherever a spec names a model (and, for an architecture
    of Distiller's that prunescope does not build, why not)."""
    reason = unsupported_reason(name)
    if reason is not None:
        return f"model {name!r} is not supported: {reason}"
    return (f"unknown model {name!r}: neither a registered model nor an architecture "
            "(e.g. digits-cnn, resnet20-cifar, resnet18)")


def resolve_dataset_root(settings: Settings, root: str, field: str) -> Path:
    """A dataset path is accepted only when it resolves under a configured root (no escapes)."""
    try:
        path = Path(root).expanduser()
        resolved = (path if path.is_absolute() else settings.roots[0] / path).resolve()
    except (ValueError, OSError, RuntimeError) as exc:  # NUL byte, unknown ~user, symlink loop: 422, not 500
        raise bad(field, f"{root!r} is not a usable path ({exc})") from None
    for allowed in settings.roots:
        if resolved.is_relative_to(allowed):
            return resolved
    roots = ", ".join(str(r) for r in settings.roots)
    raise bad(field, f"{root!r} resolves outside the dataset roots ({roots}); set PRUNESCOPE_DATASET_ROOTS")


def unbuildable_model(name: str, live_workers: int, stale_s: float) -> str:
    """Why a name that is neither registered nor built in is refused: no live worker publishes it."""
    how = (f"install the package that declares it ({PLUGIN_GROUP} entry point) on a worker"
           if not name.startswith(TIMM_PREFIX) else "install timm on a worker (pip install 'prunescope[timm]')")
    return (f"{unknown_model(name)}, and none of the {live_workers} live worker(s) publishes it as one it can "
            f"build: {how}, or check the name in GET /api/v1/architectures (\"published\"); a worker counts as "
            f"live while it refreshed what it builds within {stale_s:g} s (PRUNESCOPE_HEARTBEAT_STALE_S)")


def require_published(session: Session, settings: Settings, name: str, field: str) -> None:
    """A name outside the catalogue (a plugin's, ``timm/<name>``) is usable while a live worker publishes it as
    one it builds; otherwise a 422 on ``field`` that says how to get one."""
    stale_s = settings.heartbeat_stale_s
    if not repo.workers_publishing(session, name, stale_s=stale_s):
        live = len(repo.live_capabilities(session, stale_s=stale_s))
        raise bad(field, unbuildable_model(name, live, stale_s))


def validate_spec_names(session: Session, settings: Settings, spec: Any) -> None:
    """Model and dataset names must be built in, registered, or published by a live worker (plugins, timm);
    roots must stay under the allowed ones."""
    model = session.scalar(select(ModelEntry).where(ModelEntry.name == spec.model))
    if spec.model_kind == "registered" and model is None:
        raise bad("spec.model", f"no registered model is named {spec.model!r} (model_kind registered); "
                                "GET /api/v1/models lists them")
    if spec.model_kind == "architecture":
        model = None  # the architecture's fresh weights, whatever the registry holds
    spec.model_kind = "registered" if model is not None else "architecture"  # stored: the runner reads it
    if model is None and known_architecture(spec.model) is None:
        require_published(session, settings, spec.model, "spec.model")
    if model is not None and model.validation != "valid":
        raise bad("spec.model", f"model {spec.model!r} has an unusable checkpoint ({model.validation})")
    check_task(spec, model.architecture if model is not None else known_architecture(spec.model))
    registered = session.scalar(select(DatasetEntry).where(DatasetEntry.name == spec.dataset))
    if registered is None and spec.dataset not in DATASET_NAMES and \
            not repo.workers_loading(session, spec.dataset, stale_s=settings.heartbeat_stale_s):
        raise bad("spec.dataset", f"unknown dataset {spec.dataset!r}: built in are {', '.join(DATASET_NAMES)}; "
                                  f"no registered dataset has that name and no live worker publishes it (install the "
                                  f"package that declares it as a {DATASET_PLUGIN_GROUP} entry point on a worker)")
    if registered is not None:  # the schema checked each option alone; here against the registered kind
        try:
            check_dataset_options(registered.kind, {**(registered.options or {}), **spec.dataset_options},
                                  settings.limits)
        except LimitError as exc:
            raise bad(".".join(("spec.dataset_options", exc.field or "")).rstrip("."), str(exc)) from None
    root = spec.dataset_options.get("root")
    if root is not None:
        if not isinstance(root, str):
            raise bad("spec.dataset_options.root", "must be a path string")
        resolve_dataset_root(settings, root, "spec.dataset_options.root")
    elif registered is None and spec.dataset in DATASETS_WITH_ROOT:
        raise bad("spec.dataset_options.root", f"dataset {spec.dataset!r} reads files: give root=<path>")


def check_task(spec: Any, arch: str | None) -> None:
    """A catalogue architecture's task must be its dataset's (a language model reads token ids, an image
    classifier images); plugins and registered programs are checked where they run."""
    entry = architecture(arch) if arch is not None else None
    if entry is None or spec.dataset not in DATASET_NAMES:
        return
    wanted = dataset_task(spec.dataset)
    if entry.task != wanted:
        fitting = ", ".join(n for n in DATASET_NAMES if dataset_task(n) == entry.task)
        raise bad("spec.dataset", f"{spec.dataset!r} is a {wanted} dataset and {entry.name!r} a {entry.task} "
                                  f"model; use one of: {fitting}")


def check_fine_tuning(session: Session, body: Any) -> None:
    """A train or prune job fine-tunes its model: a registered torch.export program that its upload check
    found untrainable is refused now, saying why and what works on it."""
    if body.kind not in ("train", "prune"):
        return
    model = session.scalar(select(ModelEntry).where(ModelEntry.name == body.spec.model))
    why = (model.metrics or {}).get("fine_tuning") if model is not None else None
    if model is not None and model.architecture == EXPORTED_ARCHITECTURE and why:
        raise bad("spec.model", f"model {body.spec.model!r} is a torch.export program that cannot be fine-tuned "
                                f"({why}); a {body.kind} job fine-tunes, a sensitivity job works on it")


def submit_job(
    session: Session, settings: Settings, dispatcher: Dispatcher, body: Any
) -> Job:
    """Validate, insert and dispatch one job (shared by POST /jobs and plan launches)."""
    spec = body.spec
    validate_spec_names(session, settings, spec)
    check_fine_tuning(session, body)
    if body.experiment_id is not None and session.get(Experiment, body.experiment_id) is None:
        raise bad("experiment_id", f"experiment {body.experiment_id} does not exist")
    if isinstance(body, PruneJobCreate):
        check = check_schedule(spec.schedule)  # torch-free, in this process
        if not check["valid"]:
            raise bad("spec.schedule", check["error"])
    if body.kind == "plan":  # it plans a finished sweep's points
        finished_sensitivity(session, spec.sensitivity_job, "spec.sensitivity_job")
    shards = 1
    if isinstance(body, SensitivityJobCreate):
        shards = spec.shards or settings.sensitivity_shards
    job = repo.create_job(
        session, kind=body.kind, spec=spec.model_dump(mode="json"), shards=shards,
        experiment_id=body.experiment_id, code_version=code_version(),
    )
    if isinstance(body, SensitivityJobCreate):
        job.progress_total = len(spec.levels) * (len(spec.params) if spec.params else 0)
    session.commit()
    dispatch_job(dispatcher, job.id, shards)
    return job


def import_job(session: Session, body: Any, points: list[dict[str, Any]], group: str, *, source: str,
               skipped: list[dict[str, str]]) -> Job:
    """Store an analysis that ran elsewhere as a succeeded sensitivity job (nothing is dispatched).

    ``body`` is a validated import (model, dataset and their options, experiment_id); ``points`` are checked
    rows, unique per (parameter, sparsity), in the order the analysis gave them: that order becomes each
    parameter's position, as a runner's named_parameters order does. The points go through the runners'
    upsert; the spec says ``imported: true`` so the dashboard can say so, and plans check the model then."""
    if body.experiment_id is not None and session.get(Experiment, body.experiment_id) is None:
        raise bad("experiment_id", f"experiment {body.experiment_id} does not exist")
    levels = sorted({round(float(p["sparsity"]), 10) for p in points})
    # model_kind is for what runs; an imported analysis ran elsewhere (its model is checked when it is planned)
    spec = {**body.model_dump(mode="json", include=set(DATA_FIELDS) - {"model_kind"}), "imported": True,
            "group": group, "levels": levels}
    job = repo.create_job(session, kind="sensitivity", spec=spec, shards=1, experiment_id=body.experiment_id)
    positions: dict[str, int] = {}
    repo.upsert_points(session, job.id, ((p, positions.setdefault(p["parameter"], len(positions))) for p in points),
                       shard=0, worker=None)
    now = utcnow()
    shard = session.get(JobShard, (job.id, 0))
    shard.status, shard.started_at, shard.finished_at, shard.points_total = "succeeded", now, now, len(points)
    job.status, job.started_at, job.finished_at = "succeeded", now, now
    job.progress_done = job.progress_total = len(points)
    job.result = {"skipped": skipped, "imported": {"source": source, "points": len(points)}}
    session.commit()
    return job


def check_plannable(session: Session, job: Job) -> None:
    """An imported job plans only on a model this server knows (a registered model, a catalogue architecture
    or one a worker published): otherwise a 409 that names the model and says how to make it known. A launch
    then checks, as every job does, that a live worker can build it."""
    name = (job.spec or {}).get("model", "")
    if not (job.spec or {}).get("imported") or known_architecture(name) is not None:
        return
    if session.scalar(select(ModelEntry.id).where(ModelEntry.name == name)) is None and \
            name not in repo.published_architectures(session):
        raise HTTPException(409, f"sensitivity_job: job {job.id} was imported for model {name!r}, which this "
                                 "server does not know (neither a registered model nor an architecture): "
                                 "register it (POST /api/v1/models) or import the analysis under the name of "
                                 "a known model to plan from it")


def named_sweep(session: Session, job_id: int, field: str, missing: int = 422) -> Job:
    """The sensitivity job a request names in ``field``: ``missing`` if it does not exist, 422 if another kind."""
    job = session.get(Job, job_id)
    if job is None:
        raise HTTPException(missing, f"{field}: job {job_id} does not exist")
    if job.kind != "sensitivity":
        raise HTTPException(422, f"{field}: job {job_id} is a {job.kind} job, not a sensitivity job")
    return job


def finished_sensitivity(session: Session, job_id: int, field: str) -> Job:
    """The succeeded sensitivity job a plan names in ``field`` (a 409 while it is not; see
    :func:`named_sweep` and :func:`check_plannable`)."""
    job = named_sweep(session, job_id, field)
    if job.status != "succeeded":
        raise HTTPException(409, f"{field}: job {job_id} is {job.status}; plan from a succeeded job")
    check_plannable(session, job)  # an imported job: only on a model this server knows
    return job


def check_filters(status: str | None, kind: str | None) -> None:
    """Unknown filter values are a 422 (not an empty list), so a typo does not look like "no jobs"."""
    if status is not None and status not in JOB_STATUSES:
        raise bad("status (query)", f"unknown status {status!r}; one of {', '.join(JOB_STATUSES)}")
    if kind is not None and kind not in JOB_KINDS:
        raise bad("kind (query)", f"unknown kind {kind!r}; one of {', '.join(JOB_KINDS)}")


def job_page(session: Session, status: str | None, kind: str | None, experiment: int | None,
             limit: int, offset: int, search: str | None = None, sort: str = repo.DEFAULT_JOB_SORT) -> dict[str, Any]:
    """One page of jobs (newest first unless ``sort`` says otherwise) with the total the filters match;
    each item carries its key ``numbers`` (:func:`api.store.repo.job_numbers`)."""
    check_filters(status, kind)
    try:
        rows, total = repo.list_jobs(session, status=status, kind=kind, experiment=experiment, search=search,
                                     sort=sort, limit=limit, offset=offset)
    except ValueError as exc:
        raise bad("sort (query)", str(exc)) from None
    numbers = repo.job_numbers(session, rows)
    items = [{**JobOut.model_validate(r).model_dump(mode="json"), "numbers": numbers[r.id]} for r in rows]
    return {"items": items, "total": total, "limit": limit, "offset": offset}


def job_detail(session: Session, job_id: int) -> dict[str, Any]:
    """A job with its shards, in shard order."""
    job = get_or_404(session, Job, job_id, "job")
    shards = session.scalars(select(JobShard).where(JobShard.job_id == job_id).order_by(JobShard.index)).all()
    out = JobOut.model_validate(job).model_dump()
    out["shards"] = [ShardOut.model_validate(s) for s in shards]
    return out


def rows_of_job(session: Session, job_id: int, model: type, order: Any) -> list[Any]:
    """A job's rows of one table (epochs, artifacts) in ``order``; 404 if the job does not exist."""
    get_or_404(session, Job, job_id, "job")
    return list(session.scalars(select(model).where(model.job_id == job_id).order_by(order)))


def cancel_job(session: Session, settings: Settings, job_id: int) -> Job:
    """Set the cancel flag; a job no live worker holds (queued, or heartbeats stale) ends at once."""
    job = get_or_404(session, Job, job_id, "job")
    if job.status in TERMINAL_STATUSES:
        raise HTTPException(409, f"job {job_id} is already {job.status}; only queued or running jobs can be cancelled")
    repo.request_cancel(session, job, stale_s=settings.heartbeat_stale_s)
    return job


def _held_by_live_worker(job: Job, holders: list[JobShard], stale_s: float) -> HTTPException:
    now = utcnow()
    held = ", ".join(f"shard {s.index} by {s.worker or 'a worker'} (heartbeat "
                     f"{(now - repo.as_utc(s.heartbeat_at)).total_seconds():.0f} s ago)" for s in holders[:4])
    hint = ("cancel it first (POST /api/v1/jobs/{id}/cancel) and delete it once it has stopped"
            if not job.cancel_requested else "its cancel is requested: delete it once it has stopped")
    return HTTPException(409, f"job {job.id} is {job.status} and a live worker holds it: {held}; "
                              f"{hint.format(id=job.id)} (a worker counts as gone after {stale_s:g} s without "
                              "a heartbeat, PRUNESCOPE_HEARTBEAT_STALE_S)")


def delete_job(session: Session, settings: Settings, job_id: int) -> None:
    """Delete a finished job, or an unfinished one no live worker holds (it is cancelled, then deleted)."""
    job = get_or_404(session, Job, job_id, "job")
    if job.status not in TERMINAL_STATUSES:
        stale_s = settings.heartbeat_stale_s
        if holders := repo.live_shards(session, job_id, stale_s=stale_s):
            raise _held_by_live_worker(job, holders, stale_s)
        repo.request_cancel(session, job, stale_s=stale_s)  # committed first: a late claim now finds it cancelled
        if job.status not in TERMINAL_STATUSES:  # a worker claimed it in between: it will read the flag
            raise _held_by_live_worker(job, repo.live_shards(session, job_id, stale_s=stale_s), stale_s)
    repo.delete_job(session, job, settings.data_dir)
    POINTS_CACHE.drop(settings.db_url, job_id)


# What the list stream says about a job: enough to redraw a table row (no spec, which can be large).
_SUMMARY = (Job.id, Job.kind, Job.experiment_id, Job.status, Job.progress_done, Job.progress_total, Job.error,
            Job.cancel_requested, Job.created_at, Job.started_at, Job.finished_at)


def changed_jobs(factory: Any, kind: str | None, experiment: int | None, watched: set[int],
                 newest: int) -> list[dict[str, Any]]:
    """Summaries of the jobs that may have changed: active ones, the ones being watched and any newer
    than ``newest``. A finished job never changes again, so each look stays small however long the list."""
    query = select(*_SUMMARY).where(or_(Job.status.in_(ACTIVE_STATUSES), Job.id.in_(watched), Job.id > newest))
    for column, value in ((Job.kind, kind), (Job.experiment_id, experiment)):
        if value is not None:
            query = query.where(column == value)
    with factory() as session:
        rows = session.execute(query.order_by(Job.id)).all()
    return [{**r._mapping, **{k: _iso(r._mapping[k]) for k in ("created_at", "started_at", "finished_at")}}
            for r in rows]


def _iso(value: Any) -> str | None:
    return None if value is None else repo.as_utc(value).isoformat()


def newest_job_id(session: Session) -> int:
    """The highest job id now (0 with no jobs): the list stream reports every job above it as new."""
    return session.scalar(select(func.max(Job.id))) or 0


def snapshot(factory: Any, job_id: int, after_id: int, points: bool) -> tuple[dict | None, list[dict]]:
    """A job's progress state and its points after ``after_id`` (None, [] once the job is deleted)."""
    with factory() as session:
        job = session.get(Job, job_id)
        if job is None:
            return None, []
        state = {"id": job.id, "status": job.status, "done": job.progress_done, "total": job.progress_total,
                 "error": job.error}
        wanted = points and job.kind == "sensitivity"
        return state, repo.point_rows(session, job_id, after_id=after_id, position=True) if wanted else []


def require_sensitivity(job_id: int, kind: str) -> None:
    """Points and skipped parameters belong to sensitivity jobs: asking another kind is a 409."""
    if kind != "sensitivity":
        raise HTTPException(409, f"job {job_id} is a {kind} job: points belong to sensitivity jobs")


def sensitivity_job(session: Session, job_id: int) -> Job:
    """The job, if it exists (404) and is a sensitivity job (409)."""
    job = get_or_404(session, Job, job_id, "job")
    require_sensitivity(job_id, job.kind)
    return job


class CachedBody(NamedTuple):
    """A serialized points response, with its gzip form made once."""

    plain: bytes
    gzipped: bytes
    etag: str
    points: int  # the job's point count when serialized (part of the identity)


class PointsCache:
    """Serialized points of succeeded jobs. A succeeded job's points never change; only deletion
    removes them. So a body is reused while its job is still there with the same point count; that is
    re-checked in SQL at most every ``recheck_s`` per entry (a delete in this process drops the entry
    at once; one made by another server process is seen within ``recheck_s``). Hot reads then touch
    neither the database nor the thread pool."""

    def __init__(self, max_entries: int = 64, recheck_s: float = 1.0) -> None:
        self._items: OrderedDict[tuple, tuple[CachedBody, float]] = OrderedDict()
        self._lock = threading.Lock()
        self.max_entries, self.recheck_s = max_entries, recheck_s

    def fresh(self, key: tuple) -> CachedBody | None:
        """The body if it was verified against the store within ``recheck_s``."""
        with self._lock:
            item = self._items.get(key)
        if item is not None and time.monotonic() - item[1] < self.recheck_s:
            return item[0]
        return None

    def get(self, key: tuple, points: int, build: Callable[[], bytes]) -> CachedBody:
        """The body for ``points`` points (just verified by the caller), serialized on a miss."""
        with self._lock:
            item = self._items.get(key)
        body = item[0] if item is not None and item[0].points == points else None
        if body is None:
            plain = build()
            body = CachedBody(plain, gzip.compress(plain, compresslevel=5, mtime=0),
                              f'"{hashlib.blake2b(plain, digest_size=12).hexdigest()}"', points)
        with self._lock:
            self._items[key] = (body, time.monotonic())
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)
        return body

    def drop(self, store: str, job_id: int) -> None:
        with self._lock:
            for key in [k for k in self._items if k[:2] == (store, job_id)]:
                del self._items[key]


#: Keys start with the store's URL: two apps in one process (local clients, tests) never share a job's body.
POINTS_CACHE = PointsCache()
_FORMATS = {
    "json": ("application/json", lambda rows: json.dumps(rows).encode()),
    "csv": ("text/csv", lambda rows: csv_text(rows).encode()),
}


def _cached_response(request: Request, body: CachedBody, media_type: str, headers: dict[str, str]) -> Response:
    headers = {**headers, "ETag": body.etag, "Vary": "Accept-Encoding", "Cache-Control": "private, no-cache"}
    if body.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", ""):
        return Response(body.gzipped, media_type=media_type, headers={**headers, "Content-Encoding": "gzip"})
    return Response(body.plain, media_type=media_type, headers=headers)


def _points_from_store(request: Request, job_id: int, fmt: str, parameter: str | None,
                       headers: dict[str, str]) -> Response:
    """The slow path (in the thread pool): check the job, then serve fresh rows or (re)fill the cache."""
    media_type, serialize = _FORMATS[fmt]
    store = request.app.state.settings.db_url
    with request.app.state.session_factory() as session:
        row = session.execute(select(Job.kind, Job.status, Job.progress_done).where(Job.id == job_id)).first()
        if row is None:
            POINTS_CACHE.drop(store, job_id)
            raise not_found("job", job_id)
        require_sensitivity(job_id, row.kind)

        def build() -> bytes:
            return serialize([_without_id(r) for r in repo.point_rows(session, job_id, parameter)])

        if row.status != "succeeded":  # still growing: never cached
            return Response(build(), media_type=media_type, headers={**headers, "Cache-Control": "no-store"})
        cached = POINTS_CACHE.get((store, job_id, parameter, fmt), row.progress_done, build)
    return _cached_response(request, cached, media_type, headers)


async def points_response(request: Request, job_id: int, fmt: str, parameter: str | None = None,
                          headers: dict[str, str] | None = None) -> Response:
    """A job's points as ``fmt`` (json or csv): from the cache while it is fresh, else from the store."""
    headers = headers or {}
    cached = POINTS_CACHE.fresh((request.app.state.settings.db_url, job_id, parameter, fmt))
    if cached is not None:
        return _cached_response(request, cached, _FORMATS[fmt][0], headers)
    return await run_in_threadpool(_points_from_store, request, job_id, fmt, parameter, headers)


def _without_id(row: dict) -> dict:
    row.pop("id", None)
    return row
