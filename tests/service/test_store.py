"""The store on both databases: migrations, idempotent upserts, shard claims and job settlement."""

from __future__ import annotations

from datetime import timedelta

from alembic.script import ScriptDirectory
from sqlalchemy import func, select, update

from api.store import make_engine, migrate, repo
from api.store.db import alembic_config
from api.store.models import EpochMetric, Experiment, Job, JobShard, SensitivityPointRow, utcnow


def _point(param: str, sparsity: float, top1: float = 90.0) -> dict:
    return {"parameter": param, "sparsity": sparsity, "top1": top1, "top5": 99.0, "loss": 0.3,
            "samples": 100, "nnz": 10, "group": "element", "mode": "independent", "measured": True}


def test_migrate_is_idempotent(settings) -> None:
    engine = make_engine(settings.db_url)
    migrate(engine)
    migrate(engine)  # a second start must be a no-op
    with engine.connect() as conn:
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == head == "0009"
    engine.dispose()


def test_the_change_count_moves_with_every_write_the_jobs_list_shows(session_factory, settings) -> None:
    with session_factory() as s:
        seen = [repo.store_changes(s)]

        def moved() -> bool:
            s.commit()
            seen.append(repo.store_changes(s))
            s.commit()
            return seen[-1] > seen[-2]

        job = repo.create_job(s, kind="sensitivity", spec={}, shards=1)
        assert moved()
        repo.set_progress(s, job.id, done=1, total=2)
        assert moved()
        repo.upsert_point(s, job.id, _point("a.weight", 0.5), shard=0, worker="w")
        assert not moved()  # a pruned level's point: nothing the list shows
        repo.upsert_point(s, job.id, _point("a.weight", 0.0), shard=0, worker="w")
        assert moved()  # the baseline: the list's key numbers
        s.add(Experiment(name="e", description="", tags=[]))
        assert moved()
        repo.delete_job(s, s.get(Job, job.id), settings.data_dir)
        assert moved()


def test_the_change_count_shows_a_write_only_once_it_is_committed(session_factory) -> None:
    with session_factory() as writer, session_factory() as reader:
        before = repo.store_changes(reader)
        reader.commit()
        repo.create_job(writer, kind="train", spec={})
        writer.flush()
        assert repo.store_changes(reader) == before  # a reader caching now would keep the rows it can see
        reader.commit()
        writer.commit()
        assert repo.store_changes(reader) > before


def test_point_upsert_never_duplicates(session_factory) -> None:
    with session_factory() as s:
        job = repo.create_job(s, kind="sensitivity", spec={}, shards=2)
        s.commit()
        for top1 in (50.0, 60.0):  # a redelivered shard writes the same keys again
            repo.upsert_point(s, job.id, _point("conv1.weight", 0.1, top1), shard=0, worker="w")
            repo.upsert_point(s, job.id, _point("conv1.weight", 0.1 + 0.2 - 0.2), shard=0, worker="w")
        s.commit()
        rows = s.scalars(select(SensitivityPointRow).where(SensitivityPointRow.job_id == job.id)).all()
        assert len(rows) == 1 and rows[0].top1 == 90.0
        repo.upsert_epoch(s, job.id, 0, {"top1": 10, "loss": 1.0, "extra": "x"})
        repo.upsert_epoch(s, job.id, 0, {"top1": 20, "loss": 0.5})
        s.commit()
        epochs = s.scalars(select(EpochMetric)).all()
        assert [(e.epoch, e.top1) for e in epochs] == [(0, 20.0)]


def test_claims_and_settlement(session_factory) -> None:
    with session_factory() as s:
        job = repo.create_job(s, kind="sensitivity", spec={}, shards=2)
        s.commit()
        assert repo.claim_shard(s, job.id, 0, worker="a", stale_s=5)
        assert not repo.claim_shard(s, job.id, 0, worker="b", stale_s=5)  # a live holder keeps it
        assert repo.claim_shard(s, job.id, 0, worker="a", stale_s=5)  # same worker: redelivery
        s.execute(update(JobShard).where(JobShard.index == 0)
                  .values(heartbeat_at=utcnow() - timedelta(seconds=60)))
        s.commit()
        assert repo.shards_to_redispatch(s, stale_s=5) == [(job.id, 0)]
        assert repo.claim_shard(s, job.id, 0, worker="b", stale_s=5)  # stale: taken over
        repo.upsert_point(s, job.id, _point("a.weight", 0.0), shard=0, worker="b")
        assert repo.finish_shard(s, job.id, 0, status="succeeded") == "running"
        assert repo.claim_shard(s, job.id, 1, worker="a", stale_s=5)
        repo.upsert_point(s, job.id, _point("b.weight", 0.0), shard=1, worker="a")
        assert repo.finish_shard(s, job.id, 1, status="succeeded") == "succeeded"
        assert not repo.claim_shard(s, job.id, 1, worker="a", stale_s=5)  # finished: never rerun
        job = s.get(Job, job.id, populate_existing=True)
        assert (job.progress_done, job.progress_total) == (2, 2)


def test_cancel_queued_and_delete(session_factory, settings) -> None:
    with session_factory() as s:
        job = repo.create_job(s, kind="train", spec={})
        s.commit()
        repo.request_cancel(s, job)
        assert job.status == "cancelled"
        assert not repo.claim_shard(s, job.id, 0, worker="a", stale_s=5)
        art = repo.store_artifact(s, settings.data_dir, kind="report", name="r.txt", source=b"hi", job_id=job.id)
        s.commit()
        path = settings.data_dir / art.path
        assert path.read_bytes() == b"hi" and len(art.sha256) == 64
        repo.delete_job(s, job, settings.data_dir)
        assert not path.exists()
        assert s.scalar(select(func.count()).select_from(JobShard)) == 0
