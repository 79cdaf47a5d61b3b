"""One function per job kind, shared by the Celery task and the embedded executor.

``run_shard`` claims a shard in SQL, keeps its heartbeat fresh from a side thread, runs the kind's
runner and settles the job. Runners store every point/epoch as it comes (idempotent upserts), so a
redelivered or resumed shard never duplicates or loses one, and they check the cancel flag between
points. torch and pruning_core are imported here only, never by the API.
"""

from __future__ import annotations

import contextvars
import copy
import functools
import importlib
import json
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.logs import job_context
from api.shared.limits import limits_applied
from api.shared.settings import Settings
from api.shared.specs import SPECS, PlanSpec, PruneSpec, SensitivitySpec, TrainSpec
from api.store import repo
from api.store.models import TERMINAL_STATUSES, DatasetEntry, Job, ModelEntry, SensitivityPointRow
from pruning_core.names import EXPORTED_ARCHITECTURE
from worker import facts

log = logging.getLogger(__name__)
T = TypeVar("T")
JobSpec = TrainSpec | SensitivitySpec | PruneSpec
# How long a store write keeps retrying through a database outage before the shard gives up; beyond
# this the heartbeat is long stale and the reaper hands the shard to another worker anyway.
STORE_RETRY_S = 60.0


class Cancelled(Exception):
    """Raised between points/epochs when the job's cancel flag is set."""


@dataclass
class JobContext:
    """What a runner needs: the job's spec, its shard, the store and where results go.

    ``stored`` is the spec as the job row holds it; ``spec`` is it validated by its kind's model
    (:func:`parse_spec`), which is all a runner reads, so the defaults live in ``api.schemas`` only."""

    job_id: int
    shard: int
    shards: int
    kind: str
    stored: dict[str, Any]
    factory: sessionmaker[Session]
    settings: Settings
    worker: str
    spec: Any = None  # JobSpec once parse_spec ran
    device: Any = None

    def check_cancel(self, session: Session) -> None:
        if repo.is_cancel_requested(session, self.job_id):
            raise Cancelled()

    def store(self, write: Callable[[Session], T], what: str) -> T:
        """Run ``write`` in a fresh session and commit, retrying through database outages."""
        return with_store(self.factory, write, what=f"job {self.job_id} shard {self.shard}: {what}")


def parse_spec(kind: str, stored: dict[str, Any], settings: Settings) -> JobSpec:
    """The stored spec through the API's model, within this deployment's limits: typed fields, and the
    defaults of fields added since the job was stored. A spec that no longer validates fails the job
    with the model's message."""
    with limits_applied(settings.limits):
        return SPECS[kind].model_validate(stored)


def _transient(exc: BaseException) -> bool:
    """Connection-level failures (server gone, pool invalidated, SQLite busy) are worth retrying;
    constraint or programming errors are not."""
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated


def with_store(factory: sessionmaker[Session], write: Callable[[Session], T], *, what: str,
               deadline_s: float = STORE_RETRY_S) -> T:
    """``write(session)`` then commit, with exponential backoff (0.25 s .. 5 s) on transient errors.

    Every write the runners make is idempotent (upserts, absolute progress), so a retry after a commit
    whose acknowledgement was lost does no harm."""
    delay, give_up = 0.25, time.monotonic() + deadline_s
    while True:
        try:
            with factory() as session:
                value = write(session)
                session.commit()
                return value
        except Exception as exc:
            if not _transient(exc) or time.monotonic() + delay > give_up:
                raise
            log.warning("%s: store unavailable (%s); retrying in %.2f s", what, type(exc).__name__, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


#: What the runners import on first use: ``prunescope worker`` imports them before it takes a shard
#: (:func:`worker.celery_app.preload`), so a worker's first shard starts as fast as its later ones.
RUNNER_MODULES = ("torch", "pruning_core.training", "pruning_core.datasets", "pruning_core.checkpoint",
                  "pruning_core.sensitivity", "pruning_core.fastpath", "pruning_core.parallel")


def preload_modules() -> None:
    """Import :data:`RUNNER_MODULES` (seconds of a core: torch, fx, the engines)."""
    for name in RUNNER_MODULES:
        importlib.import_module(name)


@functools.lru_cache(maxsize=1)
def configure_torch(threads: int) -> int:
    """Set torch's intra-op threads once per process: by default half the usable cores, because the
    API, other workers and other users share them and oversubscribed BLAS threads run many times slower."""
    import torch

    if threads <= 0:
        from pruning_core.cores import usable_cores

        threads = max(1, usable_cores() // 2)
    torch.set_num_threads(threads)
    return threads


class _Heartbeat:
    """Refreshes the shard's heartbeat every few seconds so a killed worker is noticed quickly."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self._stop = threading.Event()
        self._thread = threading.Thread(target=contextvars.copy_context().run, args=(self._loop,),  # the log context
                                        name=f"heartbeat-{ctx.job_id}-{ctx.shard}", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        period = max(self.ctx.settings.heartbeat_stale_s / 4, 0.2)
        while not self._stop.wait(period):
            try:
                with self.ctx.factory() as s:
                    repo.heartbeat(s, self.ctx.job_id, self.ctx.shard)
                    s.commit()
            except Exception:  # noqa: BLE001 - a missed beat is retried next period
                log.warning("heartbeat failed for job %s shard %s", self.ctx.job_id, self.ctx.shard)


def run_shard(job_id: int, shard: int, *, factory: sessionmaker[Session], settings: Settings, worker: str) -> str:
    """Claim and run one shard; returns the job's status afterwards (or 'skipped' if not claimed)."""
    def claim(session: Session) -> JobContext | None:
        if not repo.claim_shard(session, job_id, shard, worker=worker, stale_s=settings.heartbeat_stale_s):
            return None
        job = session.get(Job, job_id)
        return JobContext(job_id, shard, job.shards_total, job.kind, dict(job.spec), factory, settings, worker)

    ctx = with_store(factory, claim, what=f"job {job_id} shard {shard}: claim")
    if ctx is None:
        return "skipped"
    with job_context(job_id=job_id, shard=shard, worker=worker):  # issue 18: every record of the job carries these
        log.info("job %s shard %s/%s started (%s)", job_id, shard, ctx.shards, ctx.kind)
        final = _run_claimed(ctx)
        log.info("job %s shard %s ended; the job is %s", job_id, shard, final)
        if final in TERMINAL_STATUSES:
            forget_setups(job_id)
        if final in TERMINAL_STATUSES and settings.mlflow_tracking_uri:
            from api.export.auto import export_finished

            export_finished(factory, settings, job_id)  # logs a failure, never fails the job
        return final


def _run_claimed(ctx: JobContext) -> str:
    """Run a claimed shard under its heartbeat and record how it ended; the job's status afterwards."""
    job_id, shard, settings = ctx.job_id, ctx.shard, ctx.settings
    status, error = "succeeded", None
    with _Heartbeat(ctx):
        try:
            from pruning_core.training import resolve_device

            ctx.spec = parse_spec(ctx.kind, ctx.stored, settings)
            configure_torch(settings.torch_threads)
            ctx.device = resolve_device(ctx.spec.device)
            ctx.store(lambda s: repo.heartbeat(s, job_id, shard, device=str(ctx.device)), "heartbeat")
            RUNNERS[ctx.kind](ctx)
        except Cancelled:
            status = "cancelled"
        except Exception as exc:  # noqa: BLE001 - any failure is recorded on the job, with its type
            log.exception("job %s shard %s failed", job_id, shard)
            status, error = "failed", f"{type(exc).__name__}: {exc}"
    return ctx.store(lambda s: repo.finish_shard(s, job_id, shard, status=status, error=error), "finish")


# -- loading what a spec names -------------------------------------------------------------------

def spec_architecture(ctx: JobContext) -> tuple[str, str | None]:
    """The spec's architecture and checkpoint path: a registered model's, or an architecture name alone."""
    with ctx.factory() as s:
        return repo.model_source(s, ctx.spec.model, ctx.settings.data_dir, ctx.spec.model_kind)


def load_spec_model(arch: str, path: str | None, bundle: Any) -> Any:
    """The spec's model as :func:`pruning_core.checkpoint.load_for_dataset` loads it for the dataset."""
    from pruning_core.checkpoint import load_for_dataset

    return load_for_dataset(path, arch, bundle)


def require_trainable(model: Any, kind: str) -> None:
    """A train or prune job fine-tunes its model: a program that cannot be trained fails with why, and
    what works on it."""
    from pruning_core.exported import trainable

    why = trainable(model)
    if why is not None:
        raise ValueError(f"a {kind} job fine-tunes its model, and this torch.export program cannot be: {why}")


def load_spec_dataset(ctx: JobContext, arch: str, split: str) -> Any:
    """The spec's dataset split; ``synthetic`` defaults to the model's input shape and class count."""
    from pruning_core.datasets import load_dataset, options_for_model

    name, options = ctx.spec.dataset, dict(ctx.spec.dataset_options)
    with ctx.factory() as s:
        entry = s.scalar(select(DatasetEntry).where(DatasetEntry.name == name))
        if entry is not None:
            name = entry.kind
            options = {**(entry.options or {}), **({"root": entry.root} if entry.root else {}), **options}
    return load_dataset(name, split=split, limits=ctx.settings.limits, **options_for_model(name, arch, options))


# -- sensitivity ---------------------------------------------------------------------------------

def shard_parameters(params: Sequence[str], shard: int, shards: int,
                     cost: Callable[[Sequence[str]], float] = len) -> list[str]:
    """This shard's parameters: the ``shard``-th of at most ``shards`` contiguous pieces of ``params`` (model
    order) whose largest ``cost`` is least (:func:`pruning_core.parallel.balanced_shards`). Round-robin pieces
    of equal count cost unequal work (an early layer's suffix is the whole model), and each one's fast-engine
    chain runs to the model's end; balanced contiguous pieces finish together, their chains stop at their own
    last cut. Every shard computes the same pieces; one beyond them (fewer parameters than shards) has none."""
    from pruning_core.parallel import balanced_shards

    pieces = balanced_shards(params, cost, shards) if params else []
    return pieces[shard] if shard < len(pieces) else []


def sweep_cost(model: Any, example: Any, params: Sequence[str], levels: Sequence[float],
               engine: str) -> Callable[[Sequence[str]], float]:
    """What measuring a piece of ``params`` costs the engine, in MACs per sample
    (:func:`pruning_core.parallel.sweep_work`: the unpruned pass, the prefix chain, each pruning level's
    suffix); the piece's parameter count where the model's work cannot be counted."""
    from pruning_core.parallel import sweep_work

    try:
        work = sweep_work(model, example, params)
    except Exception as exc:  # noqa: BLE001 - hooks and tracing fail on odd models; only the balance suffers
        log.warning("shards balanced by parameter count: the sweep's work cannot be counted (%s)", exc)
        return len
    changed = dict.fromkeys(params, sum(1 for level in levels if level > 0))  # level 0 reuses the unpruned pass
    return lambda piece: work.engine(piece, changed, engine == "fast")


@dataclass
class SweepSetup:
    """What every shard of a sensitivity job builds alike, built once per worker process and job
    (:func:`sweep_setup`), so that a shard starts cheaply and jobs can have more shards than workers: the
    dataset, the model as loaded (each shard measures a copy), the levels, the selected and skipped parameters,
    each parameter's position in the model and the cost that balances the shards' pieces."""

    bundle: Any
    model: Any
    example: Any
    levels: list[float]
    params: list[str]
    skipped: list[Any]
    index: dict[str, int]
    cost: Callable[[Sequence[str]], float]

    def piece(self, shard: int, shards: int) -> list[str]:
        return shard_parameters(self.params, shard, shards, self.cost)

    def fresh_model(self) -> Any:
        """A copy of the model as loaded: the analysis moves and swaps its weights, the next shard's must not see
        that (a copy has the same values, so the same points)."""
        return copy.deepcopy(self.model)


#: Setups kept per process, newest last: a worker runs one job's shards after another, a threads pool a few.
_SETUPS_KEPT = 2
_setups: dict[tuple[Any, ...], SweepSetup] = {}
_setups_lock = threading.Lock()


def sweep_setup(ctx: JobContext) -> SweepSetup:
    """The job's :class:`SweepSetup`: this process's, when one of its shards built it already."""
    key = (ctx.job_id, json.dumps(ctx.stored, sort_keys=True, default=str), str(ctx.device))
    with _setups_lock:
        setup = _setups.get(key)
    if setup is None:
        setup = _build_setup(ctx)
        with _setups_lock:
            _setups[key] = setup
            while len(_setups) > _SETUPS_KEPT:
                _setups.pop(next(iter(_setups)))
    return setup


def forget_setups(job_id: int) -> None:
    """Drop the job's setups (its dataset and model) once it has ended."""
    with _setups_lock:
        for key in [k for k in _setups if k[0] == job_id]:
            del _setups[key]


def _build_setup(ctx: JobContext) -> SweepSetup:
    from pruning_core.sensitivity import select_parameters

    spec: SensitivitySpec = ctx.spec
    arch, path = spec_architecture(ctx)
    bundle = load_spec_dataset(ctx, arch, spec.split)
    model = load_spec_model(arch, path, bundle)
    facts.publish_from_runner(ctx.factory, arch, path, model, bundle.input_shape)
    example = bundle.dataset[0][0].unsqueeze(0)
    # parsed by the spec's validator (a stored text, from before levels were stored parsed, included)
    levels = [round(float(x), 10) for x in spec.levels]
    params, skipped = select_parameters(model, spec.params, spec.group, example)
    # the position in named_parameters(), whatever order the spec's globs listed them in: reads sort on it
    index = {name: i for i, (name, _) in enumerate(model.named_parameters())}
    cost = sweep_cost(model, example, params, levels, spec.engine)
    return SweepSetup(bundle, model, example, levels, params, skipped, index, cost)


def run_sensitivity(ctx: JobContext) -> None:
    from pruning_core.datasets import make_loader
    from pruning_core.sensitivity import SensitivityAnalysis

    spec: SensitivitySpec = ctx.spec
    setup = sweep_setup(ctx)
    bundle, levels, all_params, skipped, index = setup.bundle, setup.levels, setup.params, setup.skipped, setup.index
    mine = setup.piece(ctx.shard, ctx.shards)
    # Every shard selects the same parameters, so each may record the skipped ones (same value).
    skipped_rows = [{"parameter": sp.parameter, "reason": sp.reason} for sp in skipped]

    def start(s: Session) -> set[tuple[str, float]]:
        repo.set_progress(s, ctx.job_id, total=len(all_params) * len(levels))
        repo.merge_result(s, ctx.job_id, {"skipped": skipped_rows, "parameters": len(all_params)})
        rows = s.execute(select(SensitivityPointRow.parameter, SensitivityPointRow.sparsity)
                         .where(SensitivityPointRow.job_id == ctx.job_id))
        return {(parameter, sparsity) for parameter, sparsity in rows}

    stored = ctx.store(start, "start")
    ctx.store(ctx.check_cancel, "cancel check")
    todo = [p for p in mine if any((p, lv) not in stored for lv in levels)]
    if not todo:
        return  # a resumed shard whose points are all stored already
    model, loader = setup.fresh_model(), make_loader(bundle, batch_size=spec.batch_size)
    analysis = SensitivityAnalysis(
        model, loader, levels=levels, params=todo, group=spec.group, device=ctx.device, engine=spec.engine,
        coupled=spec.coupled, samples=spec.samples, seed=spec.seed, early_stop_top1=spec.early_stop, amp=spec.amp,
        latency=spec.latency, task=bundle.task,
        adaptive_tolerance=spec.adaptive_tolerance, adaptive_confidence=spec.adaptive_confidence,
        memory_budget_mb=spec.memory_mb,
    )
    ctx.store(lambda s: repo.merge_result(s, ctx.job_id, {"engine": analysis.engine,
                                                          "engine_note": analysis.engine_note}), "engine")
    for point in analysis:
        values = asdict(point)

        def save(s: Session, values: dict[str, Any] = values) -> None:
            repo.upsert_point(s, ctx.job_id, values, shard=ctx.shard, worker=ctx.worker,
                              param_index=index.get(values["parameter"]))
            repo.set_progress(s, ctx.job_id, done=repo.count_points(s, ctx.job_id))
            ctx.check_cancel(s)

        ctx.store(save, "store point")


# -- train and prune -----------------------------------------------------------------------------

def _epoch_callback(ctx: JobContext, total: int) -> Any:
    """Store each epoch as it ends, advance progress, and stop between epochs when cancelled."""
    ctx.store(lambda s: repo.set_progress(s, ctx.job_id, done=0, total=total), "progress")
    done = 0

    def on_epoch(metrics: Any) -> None:
        nonlocal done
        data = asdict(metrics)
        done += 1

        def save(s: Session) -> None:
            repo.upsert_epoch(s, ctx.job_id, int(data["epoch"]), data)
            repo.set_progress(s, ctx.job_id, done=min(total, done))
            ctx.check_cancel(s)

        ctx.store(save, "store epoch")

    return on_epoch


def store_file(ctx: JobContext, kind: str, name: str, data: bytes) -> None:
    """Keep a job's file as an artifact; a rerun of the shard replaces its earlier copy of ``name``."""
    from api.store.models import Artifact

    def save(s: Session) -> None:
        for old in s.scalars(select(Artifact).where(Artifact.job_id == ctx.job_id, Artifact.name == name)):
            (ctx.settings.data_dir / old.path).unlink(missing_ok=True)
            s.delete(old)
        repo.store_artifact(s, ctx.settings.data_dir, kind=kind, name=name, source=data, job_id=ctx.job_id)

    ctx.store(save, f"store {name}")


def register_model(ctx: JobContext, model: Any, arch: str, metrics: dict[str, Any], *, masks: Any = None,
                   example: Any = None) -> None:
    """Save the model as a checkpoint artifact and (re-)register it under the spec's name; a program stays
    a program (exported again on ``example``, a batch of its input, with its new weights)."""
    from pruning_core.checkpoint import save_checkpoint

    name = ctx.spec.register_as or f"{arch}-job{ctx.job_id}"
    with tempfile.TemporaryDirectory() as tmp:
        if arch == EXPORTED_ARCHITECTURE:
            from pruning_core.exported import export_model

            path = Path(tmp) / f"{name}.pt2"
            export_model(model, example, path)
        else:
            path = Path(tmp) / f"{name}.pt"
            save_checkpoint(path, model, arch=arch, masks=masks, metadata={"job": ctx.job_id, **metrics})

        def save(s: Session) -> None:
            entry = s.scalar(select(ModelEntry).where(ModelEntry.name == name))
            if entry is not None and entry.source_job_id not in (None, ctx.job_id):
                raise ValueError(f"register_as: a model named {name!r} already exists (from another job)")
            artifact = repo.store_artifact(s, ctx.settings.data_dir, kind="checkpoint", name=path.name,
                                           source=path, job_id=ctx.job_id)
            if entry is None:
                entry = ModelEntry(name=name)
                s.add(entry)
            entry.architecture, entry.artifact_id, entry.checkpoint_sha256 = arch, artifact.id, artifact.sha256
            entry.parameters = sum(p.numel() for p in model.parameters())
            entry.shapes, entry.prunable = facts.describe(model)
            entry.metrics, entry.source_job_id, entry.validation = metrics, ctx.job_id, "valid"
            repo.merge_result(s, ctx.job_id, {"model": name, "checkpoint_artifact": artifact.id})

        ctx.store(save, "register model")


def optimizer_options(spec: TrainSpec | PruneSpec) -> dict[str, Any]:
    """The optimizer fields train and prune specs share."""
    return {"optimizer": spec.optimizer, "momentum": spec.momentum, "weight_decay": spec.weight_decay}


def run_train(ctx: JobContext) -> None:
    from pruning_core.datasets import make_loader
    from pruning_core.training import evaluate, train

    spec: TrainSpec = ctx.spec
    arch, path = spec_architecture(ctx)
    train_set = load_spec_dataset(ctx, arch, "train")
    model = load_spec_model(arch, path, train_set)
    require_trainable(model, "train")
    train_loader = make_loader(train_set, batch_size=spec.batch_size, shuffle=True, seed=spec.seed)
    test_loader = make_loader(load_spec_dataset(ctx, arch, "test"), batch_size=spec.batch_size)
    train(model, train_loader, epochs=spec.epochs, lr=spec.lr, **optimizer_options(spec),
          eval_loader=test_loader, on_epoch=_epoch_callback(ctx, spec.epochs), seed=spec.seed,
          device=ctx.device, progress=False)
    final = asdict(evaluate(model, test_loader, ctx.device))
    ctx.store(lambda s: repo.merge_result(s, ctx.job_id, {"final": final}), "result")
    register_model(ctx, model.cpu(), arch, final, example=train_set.dataset[0][0].unsqueeze(0))


def run_prune_job(ctx: JobContext) -> None:
    from pruning_core.datasets import make_loader
    from pruning_core.prune_job import run_prune
    from pruning_core.schedule import parse_schedule

    spec: PruneSpec = ctx.spec
    arch, path = spec_architecture(ctx)
    train_set = load_spec_dataset(ctx, arch, "train")  # its name is the kind, also for a registered dataset
    model = load_spec_model(arch, path, train_set)
    require_trainable(model, "prune")
    train_loader = make_loader(train_set, batch_size=spec.batch_size, shuffle=True, seed=spec.seed)
    test_loader = make_loader(load_spec_dataset(ctx, arch, "test"), batch_size=spec.batch_size)
    schedule = parse_schedule(spec.schedule, source="spec.schedule")
    store_file(ctx, "schedule", "schedule.yaml", spec.schedule.encode())
    result = run_prune(model, train_loader, test_loader, schedule, spec.epochs, lr=spec.lr,
                       **optimizer_options(spec), thin=spec.thin, latency_batch=spec.latency_batch,
                       start_epoch=spec.start_epoch, arch=arch, dataset=train_set.name, seed=spec.seed,
                       on_epoch=_epoch_callback(ctx, spec.epochs), device=ctx.device, progress=False)
    metrics = result.metrics()
    store_file(ctx, "report", "prune-report.json", json.dumps(metrics, indent=2, default=str).encode())
    summary = {k: v for k, v in metrics.items() if k != "epochs"}  # epochs live in epoch_metrics
    summary["summary"] = [asdict(row) for row in result.summary]
    ctx.store(lambda s: repo.merge_result(s, ctx.job_id, json.loads(json.dumps(summary, default=str))), "result")
    final = metrics["final"]
    register_model(ctx, model.cpu(), arch, {"top1": final["top1"], "top5": final["top5"], "loss": final["loss"],
                                            "sparsity": result.sparsity}, masks=result.masks,
                   example=train_set.dataset[0][0].unsqueeze(0))


# -- plan ----------------------------------------------------------------------------------------

def _sweep_points(ctx: JobContext, job_id: int) -> list[Any]:
    """The sweep's points, in model order, as the plan functions read them (attributes)."""
    from types import SimpleNamespace

    with ctx.factory() as s:
        return [SimpleNamespace(**row) for row in repo.point_rows(s, job_id)]


def run_plan(ctx: JobContext) -> None:
    """The optimiser's plan of a sweep measured as a whole on the sweep's model and data (corrected when asked),
    then each baseline at the same goal measured the same way; the result holds ``plan``, ``baselines`` (each
    with its predicted and measured drop, or why it has no plan) and the plan's schedule ``yaml``."""
    from pruning_core.datasets import make_loader
    from pruning_core.metrics import prunable_parameters
    from pruning_core.plan import plan_schedule, planned_sizes
    from pruning_core.plan.compare import as_json, predicted_baselines, weight_baseline
    from pruning_core.plan.search import search
    from pruning_core.plan.verify import correct, verify
    from pruning_core.schedule import dump_schedule

    spec: PlanSpec = ctx.spec
    goal = spec.goal()
    arch, path = spec_architecture(ctx)
    bundle = load_spec_dataset(ctx, arch, spec.split)
    model = load_spec_model(arch, path, bundle)
    loader = make_loader(bundle, batch_size=spec.batch_size)
    example = bundle.dataset[0][0].unsqueeze(0)
    points = _sweep_points(ctx, spec.sensitivity_job)
    sizes = planned_sizes({n: tuple(p.shape) for n, p in model.named_parameters()},
                          [n for n, _ in prunable_parameters(model)], points)
    measure = {"coupled": spec.coupled, "device": ctx.device, "samples": spec.samples, "seed": spec.seed,
               "task": bundle.task}
    others: dict[str, Any] = predicted_baselines(points, goal, sizes) if spec.baselines else {}
    if spec.baselines:
        extra = weight_baseline(points, goal, model, example, sizes)
        if extra is not None:
            others[extra[0]] = extra[1]
    total = (spec.rounds if spec.correct else 1) + sum(not isinstance(v, str) for v in others.values())
    ctx.store(lambda s: repo.set_progress(s, ctx.job_id, done=0, total=total), "progress")
    if spec.correct:
        chosen = correct(points, model, loader, budget=spec.budget, objective=goal.objective, rounds=spec.rounds,
                         sizes=sizes, metric=goal.metric, higher_is_better=goal.higher_is_better,
                         interpolate=goal.interpolate, **measure)
    elif spec.search:
        chosen = search(goal.solve(points, sizes), points, model, loader, sizes=sizes, interpolate=goal.interpolate,
                        evaluations=spec.evaluations, starts=[v for v in others.values() if not isinstance(v, str)],
                        **measure)
    else:
        chosen = verify(goal.solve(points, sizes), model, loader, **measure)
    done = len(chosen.rounds) or 1
    yaml_text = dump_schedule(plan_schedule(chosen, epochs=spec.epochs, one_shot=spec.one_shot))
    ctx.store(lambda s: (repo.merge_result(s, ctx.job_id, {"plan": as_json(chosen), "yaml": yaml_text}),
                         repo.set_progress(s, ctx.job_id, done=done), ctx.check_cancel(s)), "plan")
    store_file(ctx, "schedule", "plan.yaml", yaml_text.encode())
    measured: dict[str, Any] = {}
    dense = chosen.measured["dense"]  # the unpruned model's metric: evaluated once for every plan
    for name, baseline in others.items():
        measured[name] = baseline if isinstance(baseline, str) else verify(baseline, model, loader, dense=dense,
                                                                           **measure)
        if not isinstance(baseline, str):
            done += 1
        ctx.store(lambda s, d=done: (repo.merge_result(s, ctx.job_id, {
            "baselines": {k: as_json(v) for k, v in measured.items()}}), repo.set_progress(s, ctx.job_id, done=d),
            ctx.check_cancel(s)), "baseline")


RUNNERS = {"sensitivity": run_sensitivity, "train": run_train, "prune": run_prune_job, "plan": run_plan}
