"""One function per job kind, shared by the Celery task and the embedded executor.

``run_shard`` claims a shard in SQL, keeps its heartbeat fresh from a side thread, runs the kind's
runner and settles the job. Runners store every point/epoch as it comes (idempotent upserts), so a
redelivered or resumed shard never duplicates or loses one, and they check the cancel flag between
points. torch and pruning_core are imported here only, never by the API.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.settings import Settings
from api.store import repo
from api.store.models import DatasetEntry, Job, ModelEntry, SensitivityPointRow

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """Raised between points/epochs when the job's cancel flag is set."""


@dataclass
class JobContext:
    """What a runner needs: the job's spec, its shard, the store and where results go."""

    job_id: int
    shard: int
    shards: int
    kind: str
    spec: dict[str, Any]
    factory: sessionmaker[Session]
    settings: Settings
    worker: str
    device: Any = None

    def check_cancel(self, session: Session) -> None:
        if repo.is_cancel_requested(session, self.job_id):
            raise Cancelled()


class _Heartbeat:
    """Refreshes the shard's heartbeat every few seconds so a killed worker is noticed quickly."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{ctx.job_id}-{ctx.shard}", daemon=True)

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
    with factory() as session:
        if not repo.claim_shard(session, job_id, shard, worker=worker, stale_s=settings.heartbeat_stale_s):
            return "skipped"
        job = session.get(Job, job_id)
        ctx = JobContext(job_id, shard, job.shards_total, job.kind, dict(job.spec), factory, settings, worker)
    status, error = "succeeded", None
    with _Heartbeat(ctx):
        try:
            from pruning_core.training import resolve_device

            ctx.device = resolve_device(ctx.spec.get("device", "auto"))
            with factory() as session:
                repo.heartbeat(session, job_id, shard, device=str(ctx.device))
                session.commit()
            RUNNERS[ctx.kind](ctx)
        except Cancelled:
            status = "cancelled"
        except Exception as exc:  # noqa: BLE001 - any failure is recorded on the job, with its type
            log.exception("job %s shard %s failed", job_id, shard)
            status, error = "failed", f"{type(exc).__name__}: {exc}"
    with factory() as session:
        return repo.finish_shard(session, job_id, shard, status=status, error=error)


# -- loading what a spec names -------------------------------------------------------------------

def load_spec_model(ctx: JobContext) -> tuple[Any, str]:
    """The spec's model: a registered one (its checkpoint) or an architecture with fresh weights."""
    from pruning_core.checkpoint import load_model

    with ctx.factory() as s:
        entry = s.scalar(select(ModelEntry).where(ModelEntry.name == ctx.spec["model"]))
        path = None
        if entry is not None:
            arch = entry.architecture
            if entry.artifact_id is not None:
                from api.store.models import Artifact

                path = ctx.settings.data_dir / s.get(Artifact, entry.artifact_id).path
        else:
            arch = ctx.spec["model"]
    return load_model(str(path) if path else None, arch), arch


def load_spec_dataset(ctx: JobContext, arch: str, split: str) -> Any:
    """The spec's dataset split; ``synthetic`` defaults to the model's input shape and class count."""
    from pruning_core.datasets import load_dataset
    from pruning_core.models import model_info

    name, options = ctx.spec["dataset"], dict(ctx.spec.get("dataset_options") or {})
    with ctx.factory() as s:
        entry = s.scalar(select(DatasetEntry).where(DatasetEntry.name == name))
        if entry is not None:
            name = entry.kind
            options = {**(entry.options or {}), **({"root": entry.root} if entry.root else {}), **options}
    if name == "synthetic":
        info = model_info(arch)
        options.setdefault("shape", "x".join(str(d) for d in info.input_shape))
        options.setdefault("classes", info.num_classes)
    return load_dataset(name, split=split, **options)


# -- sensitivity ---------------------------------------------------------------------------------

def shard_parameters(params: list[str], shard: int, shards: int) -> list[tuple[int, str]]:
    """This shard's (model index, parameter) pairs: round-robin, so shards get similar work."""
    return [(i, p) for i, p in enumerate(params) if i % shards == shard]


def run_sensitivity(ctx: JobContext) -> None:
    from pruning_core.datasets import make_loader
    from pruning_core.sensitivity import SensitivityAnalysis, select_parameters

    spec = ctx.spec
    model, arch = load_spec_model(ctx)
    bundle = load_spec_dataset(ctx, arch, spec.get("split", "test"))
    loader = make_loader(bundle, batch_size=spec.get("batch_size", 256))
    example = bundle.dataset[0][0].unsqueeze(0)
    levels = [round(float(x), 10) for x in spec["levels"]]
    all_params, _skipped = select_parameters(model, spec.get("params"), spec.get("group", "element"), example)
    index = {p: i for i, p in enumerate(all_params)}
    mine = shard_parameters(all_params, ctx.shard, ctx.shards)
    with ctx.factory() as s:
        repo.set_progress(s, ctx.job_id, total=len(all_params) * len(levels))
        stored = set(s.execute(
            select(SensitivityPointRow.parameter, SensitivityPointRow.sparsity)
            .where(SensitivityPointRow.job_id == ctx.job_id)
        ).tuples())
        s.commit()
        ctx.check_cancel(s)
    todo = [p for _, p in mine if any((p, lv) not in stored for lv in levels)]
    if not todo:
        return  # a resumed shard whose points are all stored already
    analysis = SensitivityAnalysis(
        model, loader, levels=levels, params=todo, group=spec.get("group", "element"), device=ctx.device,
        engine=spec.get("engine", "fast"), coupled=spec.get("coupled", False), samples=spec.get("samples"),
    )
    for point in analysis:
        with ctx.factory() as s:
            repo.upsert_point(s, ctx.job_id, asdict(point), shard=ctx.shard, worker=ctx.worker,
                              param_index=index.get(point.parameter))
            repo.set_progress(s, ctx.job_id, done=repo.count_points(s, ctx.job_id))
            s.commit()
            ctx.check_cancel(s)


# -- train and prune -----------------------------------------------------------------------------

def _epoch_callback(ctx: JobContext, total: int) -> Any:
    """Store each epoch as it ends, advance progress, and stop between epochs when cancelled."""
    with ctx.factory() as s:
        repo.set_progress(s, ctx.job_id, done=0, total=total)
        s.commit()

    done = 0

    def on_epoch(metrics: Any) -> None:
        nonlocal done
        data = asdict(metrics)
        done += 1
        with ctx.factory() as s:
            repo.upsert_epoch(s, ctx.job_id, int(data["epoch"]), data)
            repo.set_progress(s, ctx.job_id, done=min(total, done))
            s.commit()
            ctx.check_cancel(s)

    return on_epoch


def register_model(ctx: JobContext, model: Any, arch: str, metrics: dict[str, Any], *, masks: Any = None) -> None:
    """Save the model as a checkpoint artifact and (re-)register it under the spec's name."""
    from pruning_core.checkpoint import save_checkpoint

    name = ctx.spec.get("register_as") or f"{arch}-job{ctx.job_id}"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.pt"
        save_checkpoint(path, model, arch=arch, masks=masks, metadata={"job": ctx.job_id, **metrics})
        with ctx.factory() as s:
            artifact = repo.store_artifact(s, ctx.settings.data_dir, kind="checkpoint", name=path.name,
                                           source=path, job_id=ctx.job_id)
            entry = s.scalar(select(ModelEntry).where(ModelEntry.name == name))
            if entry is None:
                entry = ModelEntry(name=name)
                s.add(entry)
            elif entry.source_job_id not in (None, ctx.job_id):
                raise ValueError(f"register_as: a model named {name!r} already exists (from another job)")
            entry.architecture, entry.artifact_id, entry.checkpoint_sha256 = arch, artifact.id, artifact.sha256
            entry.parameters = sum(p.numel() for p in model.parameters())
            entry.metrics, entry.source_job_id, entry.validation = metrics, ctx.job_id, "valid"
            s.commit()


def run_train(ctx: JobContext) -> None:
    from pruning_core.datasets import make_loader
    from pruning_core.training import evaluate, train

    spec = ctx.spec
    model, arch = load_spec_model(ctx)
    batch = spec.get("batch_size", 256)
    train_loader = make_loader(load_spec_dataset(ctx, arch, "train"), batch_size=batch, shuffle=True,
                               seed=spec.get("seed", 0))
    test_loader = make_loader(load_spec_dataset(ctx, arch, "test"), batch_size=batch)
    train(model, train_loader, epochs=spec["epochs"], optimizer=spec.get("optimizer", "sgd"), lr=spec["lr"],
          eval_loader=test_loader, on_epoch=_epoch_callback(ctx, spec["epochs"]), seed=spec.get("seed", 0),
          device=ctx.device, progress=False)
    result = evaluate(model, test_loader, ctx.device)
    register_model(ctx, model.cpu(), arch, {"top1": result.top1, "top5": result.top5, "loss": result.loss,
                                            "samples": result.samples})


def run_prune_job(ctx: JobContext) -> None:
    from pruning_core.datasets import make_loader
    from pruning_core.prune_job import run_prune
    from pruning_core.schedule import parse_schedule

    spec = ctx.spec
    model, arch = load_spec_model(ctx)
    batch = spec.get("batch_size", 256)
    train_loader = make_loader(load_spec_dataset(ctx, arch, "train"), batch_size=batch, shuffle=True)
    test_loader = make_loader(load_spec_dataset(ctx, arch, "test"), batch_size=batch)
    schedule = parse_schedule(spec["schedule"], source="spec.schedule")
    with ctx.factory() as s:
        repo.store_artifact(s, ctx.settings.data_dir, kind="schedule", name="schedule.yaml",
                            source=spec["schedule"].encode(), job_id=ctx.job_id)
        s.commit()
    result = run_prune(model, train_loader, test_loader, schedule, spec["epochs"], lr=spec["lr"],
                       thin=spec.get("thin", False), on_epoch=_epoch_callback(ctx, spec["epochs"]),
                       device=ctx.device, progress=False)
    metrics = result.metrics()
    with ctx.factory() as s:
        import json

        repo.store_artifact(s, ctx.settings.data_dir, kind="report", name="prune-report.json",
                            source=json.dumps(metrics, indent=2, default=str).encode(), job_id=ctx.job_id)
        s.commit()
    final = metrics["final"]
    register_model(ctx, model.cpu(), arch, {"top1": final["top1"], "top5": final["top5"], "loss": final["loss"],
                                            "sparsity": result.sparsity}, masks=result.masks)


RUNNERS = {"sensitivity": run_sensitivity, "train": run_train, "prune": run_prune_job}
