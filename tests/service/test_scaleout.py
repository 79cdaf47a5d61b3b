"""Scale-out (issue 20): a sensitivity job's shards are contiguous pieces of the parameters balanced by the
engine's work, and a worker process builds what its shards of one job share (data, model, parameters) once.

Neither may change a point: the job's points are the same whether one worker runs every shard or two
workers share them, and the same as one analysis over every parameter in this process. The runner runs for
real on a SQLite store; each simulated worker process keeps its own setups (``runners._setups`` is
per process). The speed is bench/scaleout.py's, with real worker processes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from api.shared.settings import Settings
from api.store import make_engine, make_session_factory, migrate, repo
from api.store.models import Job
from worker import runners

PARAMS = ["conv1.weight", "layer1.*.conv1.weight", "layer2.0.downsample.0.weight", "layer3.2.conv2.weight", "fc.weight"]
SPEC = {"model": "resnet20-cifar", "dataset": "synthetic", "dataset_options": {"n": 16}, "levels": [0.0, 0.5],
        "batch_size": 16, "params": PARAMS}
POINTS = 7 * 2  # the weights PARAMS selects x the levels
LEVELS = [i / 10 for i in range(10)]


@pytest.fixture(scope="module")
def resnet20() -> tuple[list[str], Any]:
    """ResNet-20's weights and the engine's cost of a piece of them (10 levels)."""
    import torch

    from pruning_core.models import create_model
    from pruning_core.sensitivity import select_parameters

    model, example = create_model("resnet20-cifar"), torch.zeros(1, 3, 32, 32)
    params = select_parameters(model, None, "element", example)[0]
    return params, runners.sweep_cost(model, example, params, LEVELS, "fast")


def test_balanced_shards_cover_every_parameter_once_in_model_order(resnet20) -> None:
    params, cost = resnet20
    for shards in (1, 2, 3, 4, 8, 30):
        pieces = [runners.shard_parameters(params, i, shards, cost) for i in range(shards)]
        assert [p for piece in pieces for p in piece] == params, shards  # contiguous, in order, each once
        assert sum(1 for piece in pieces if piece) == min(shards, len(params))


def test_balanced_shards_cost_less_than_round_robin(resnet20) -> None:
    """Each piece's chain stops at its own last cut, and the dearest piece is cheaper than round-robin's."""
    params, cost = resnet20
    for shards in (4, 8):
        balanced = [cost(runners.shard_parameters(params, i, shards, cost)) for i in range(shards)]
        robin = [cost(params[i::shards]) for i in range(shards)]
        assert max(balanced) < max(robin) and sum(balanced) < sum(robin), (shards, balanced, robin)


def test_count_balanced_without_a_cost() -> None:
    params = [f"p{i}" for i in range(10)]
    assert [len(runners.shard_parameters(params, i, 3)) for i in range(3)] == [4, 4, 2]
    assert runners.shard_parameters([], 0, 2) == []


@pytest.fixture()
def store(tmp_path: Path) -> tuple[Any, Settings]:
    settings = Settings(data_dir=tmp_path, database_url="", broker_url="", token="", torch_threads=1)
    engine = make_engine(settings.db_url)
    migrate(engine)
    yield make_session_factory(engine), settings
    engine.dispose()


def _run_job(store: tuple[Any, Settings], monkeypatch: pytest.MonkeyPatch, workers: int,
             builds: list[int]) -> list[dict]:
    """The job's 4 shards on ``workers`` simulated worker processes in turn (each with its own setups)."""
    factory, settings = store
    with factory() as s:
        job_id = repo.create_job(s, kind="sensitivity", spec=SPEC, shards=4).id
        s.commit()
    processes: list[dict] = [{} for _ in range(workers)]
    for shard in range(4):
        monkeypatch.setattr(runners, "_setups", processes[shard % workers])
        runners.run_shard(job_id, shard, factory=factory, settings=settings, worker=f"test:{shard % workers}")
    with factory() as s:
        job = s.get(Job, job_id)
        assert job.status == "succeeded", job.error
        points = repo.point_rows(s, job_id)
    builds.append(len(points))
    return [{k: v for k, v in p.items() if k != "id"} for p in points]


def _library_points() -> list[dict]:
    """One analysis over every parameter, in this process."""
    from dataclasses import asdict

    from pruning_core.datasets import load_dataset, make_loader, options_for_model
    from pruning_core.models import create_model
    from pruning_core.points import POINT_FIELDS
    from pruning_core.sensitivity import analyze

    bundle = load_dataset("synthetic", split="test", **options_for_model("synthetic", SPEC["model"], {"n": 16}))
    result = analyze(create_model(SPEC["model"]), make_loader(bundle, batch_size=16), levels=SPEC["levels"],
                     params=PARAMS, device="cpu")
    return [{k: v for k, v in asdict(p).items() if k in POINT_FIELDS} for p in result.points]


def test_points_equal_on_one_and_two_workers_and_the_library(store, monkeypatch) -> None:
    built: list[str] = []
    real = runners._build_setup

    def counting(ctx: runners.JobContext) -> runners.SweepSetup:
        built.append(ctx.worker)
        return real(ctx)

    monkeypatch.setattr(runners, "_build_setup", counting)
    sizes: list[int] = []
    one = _run_job(store, monkeypatch, 1, sizes)
    assert built == ["test:0"]  # one process: its 4 shards share one setup
    built.clear()
    two = _run_job(store, monkeypatch, 2, sizes)
    assert sorted(built) == ["test:0", "test:1"]
    assert sizes == [POINTS, POINTS]
    assert one == two
    library = _library_points()
    assert [{k: p[k] for k in library[0]} for p in one] == library
