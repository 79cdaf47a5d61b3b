"""The runners read a validated spec object (api.schemas), never a dict with defaults of their own.

Each job kind runs for real (SQLite store, the real runner, tiny data) from a stored spec that names only
what has no default; the runner must receive the kind's pydantic model with the defaults filled in, and
a stored spec that no longer validates must fail the job with the field's message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from api.schemas import PruneSpec, SensitivitySpec, TrainSpec
from api.shared.settings import Settings
from api.store import make_engine, make_session_factory, migrate, repo
from api.store.models import Job
from worker import runners

SCHEDULE = """\
version: 1
pruners:
  p: {class: SparsityLevelParameterPruner, levels: {conv1.weight: 0.5}}
policies:
  - {pruner: {instance_name: p}, epochs: [0]}
"""
DATA = {"model": "digits-cnn", "dataset": "synthetic", "dataset_options": {"n": 32}}
CASES = [
    ("train", TrainSpec, {**DATA, "epochs": 1, "optimizer": "adam"}),
    ("sensitivity", SensitivitySpec, {**DATA, "levels": [0.0, 0.5], "params": ["conv1.weight"]}),
    ("prune", PruneSpec, {**DATA, "schedule": SCHEDULE, "epochs": 1}),
]


@pytest.fixture()
def store(tmp_path: Path) -> tuple[Any, Settings]:
    settings = Settings(data_dir=tmp_path, database_url="", broker_url="", token="", torch_threads=1)
    engine = make_engine(settings.db_url)
    migrate(engine)
    return make_session_factory(engine), settings


def _run(store: tuple[Any, Settings], kind: str, stored: dict[str, Any]) -> Job:
    factory, settings = store
    with factory() as s:
        job_id = repo.create_job(s, kind=kind, spec=stored).id
        s.commit()
    runners.run_shard(job_id, 0, factory=factory, settings=settings, worker="test")
    with factory() as s:
        return s.get(Job, job_id)


@pytest.mark.parametrize(("kind", "model", "stored"), CASES, ids=[c[0] for c in CASES])
def test_each_runner_gets_its_validated_spec(store, monkeypatch, kind: str, model: type, stored: dict) -> None:
    seen: list[Any] = []
    real = runners.RUNNERS[kind]

    def recording(ctx: runners.JobContext) -> None:
        seen.append(ctx.spec)
        real(ctx)

    monkeypatch.setitem(runners.RUNNERS, kind, recording)
    job = _run(store, kind, stored)
    assert job.status == "succeeded", job.error
    (spec,) = seen
    assert type(spec) is model
    assert spec == model.model_validate(stored)  # the defaults are the model's, filled in for the runner
    assert spec.batch_size == model.model_fields["batch_size"].default
    if kind == "train":
        assert spec.lr == TrainSpec.default_lr("adam") != TrainSpec.model_fields["lr"].default


def test_a_stored_spec_that_no_longer_validates_fails_the_job_naming_the_field(store) -> None:
    job = _run(store, "sensitivity", {**DATA, "levels": "0:0.9:0.00001"})
    assert job.status == "failed"
    assert "ValidationError" in job.error and "levels" in job.error and "1e-05" in job.error
