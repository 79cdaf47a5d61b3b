"""A sweep on several worker processes (pruning_core.parallel) measures the points one process measures, in
the same (model) order; a shard's failure surfaces with its traceback; ``prunescope sense --workers``."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest
import torch

from api.cli import main
from pruning_core.datasets import load_dataset, make_loader
from pruning_core.measures import model_counts
from pruning_core.models import create_model
from pruning_core.parallel import ShardFailed, analyze_parallel, balanced_shards, sweep_work
from pruning_core.sensitivity import analyze

LEVELS = [0.0, 0.4, 0.8]


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("digits-cnn").eval()


def _loader():  # noqa: ANN202 - a DataLoader
    return make_loader(load_dataset("digits", "test"), batch_size=64)


def _same(a: list, b: list) -> None:
    """top1/top5 (and everything but the loss) exactly, the loss within 1e-5 relative, in the same order."""
    assert [(p.parameter, p.sparsity) for p in a] == [(q.parameter, q.sparsity) for q in b]
    for p, q in zip(a, b, strict=True):
        assert (p.top1, p.top5, p.samples, p.nnz, p.macs, p.params_left) == \
            (q.top1, q.top5, q.samples, q.nnz, q.macs, q.params_left)
        assert abs(p.loss - q.loss) <= 1e-5 * abs(p.loss)


@pytest.mark.parametrize(("group", "engine"), [("element", "fast"), ("filter", "plain")])
def test_two_workers_measure_the_points_of_one(group: str, engine: str) -> None:
    model, loader = _model(), _loader()
    before = set(multiprocessing.active_children())  # another test's server may still be ending its own
    one = analyze(model, loader, levels=LEVELS, group=group, engine=engine, device="cpu", samples=128)
    arrived = []
    two = analyze_parallel(model, loader, workers=2, levels=LEVELS, group=group, engine=engine, device="cpu",
                           samples=128, on_point=arrived.append)
    _same(one.points, two.points)
    assert sorted((p.parameter, p.sparsity) for p in arrived) == sorted((p.parameter, p.sparsity) for p in one.points)
    assert two.info == {**one.info, "workers": 2} and two.baseline == one.baseline
    assert (two.engine, [s.parameter for s in two.skipped]) == (one.engine, [s.parameter for s in one.skipped])
    assert not model.training and set(multiprocessing.active_children()) <= before  # the sweep's workers reaped


def test_shards_are_contiguous_and_balanced_by_work() -> None:
    names = [f"p{i}" for i in range(6)]
    cost = dict(zip(names, [5, 1, 1, 1, 1, 1], strict=True))
    shards = balanced_shards(names, lambda ps: sum(cost[p] for p in ps), 2)
    assert shards == [["p0"], ["p1", "p2", "p3", "p4", "p5"]]
    four = balanced_shards(names, len, 4)  # every worker gets a shard, none more than the least bound
    assert len(four) == 4 and sum(four, []) == names and max(map(len, four)) == 2
    assert balanced_shards(names[:1], len, 8) == [["p0"]]


def test_sweep_work_counts_the_models_macs_either_side_of_each_cut() -> None:
    model = _model()
    example = torch.zeros(1, 1, 8, 8)
    names = ["conv1.weight", "conv2.weight", "conv3.weight", "fc.weight"]
    work = sweep_work(model, example, names)
    assert work.full == model_counts(model, example)[0]
    assert [work.prefix[n] + work.suffix[n] for n in names] == [work.full] * 4
    assert work.prefix["conv1.weight"] == 0 and work.suffix["fc.weight"] == 64 * 10
    assert sorted(work.suffix.values(), reverse=True) == [work.suffix[n] for n in names]
    # three levels of which two prune: Distiller runs the model 12 times, the engine once, the chain, 8 suffixes
    changed = dict.fromkeys(names, 2)
    assert work.distiller(12) == 12 * work.full
    assert work.engine(names, changed) == work.full + work.prefix["fc.weight"] + 2 * sum(work.suffix.values())


class _FailWhenPruned:
    """A forward pre-hook on ``conv3`` that fails (raises, or exits its process) once conv3 is pruned."""

    def __init__(self, model: torch.nn.Module, how: str) -> None:
        self.how = how
        model.conv3.register_forward_pre_hook(self)

    def __call__(self, module: torch.nn.Module, _inputs: tuple) -> None:
        if bool((module.weight == 0).any()):
            if self.how == "exit":
                os._exit(3)
            raise ValueError("conv3 pruned: boom")


@pytest.mark.parametrize("how", ["raise", "exit"])
def test_a_failing_shard_surfaces_with_its_traceback(how: str) -> None:
    model = _model()
    before = set(multiprocessing.active_children())
    _FailWhenPruned(model, how)
    shard = r"worker \d \(measuring conv3.weight\)"
    expected = rf"(?s){shard} failed in its process:\n.*ValueError: conv3 pruned: boom" if how == "raise" \
        else rf"{shard}: its process exited with code 3"
    with pytest.raises(ShardFailed, match=expected):
        analyze_parallel(model, _loader(), workers=2, levels=LEVELS, engine="plain", device="cpu", samples=128,
                         params=["conv*.weight", "fc.weight"])
    assert set(multiprocessing.active_children()) <= before


def test_cli_workers_give_the_same_csv(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from pruning_core.checkpoint import save_checkpoint

    checkpoint = tmp_path / "ck.pt"
    save_checkpoint(checkpoint, _model(), arch="digits-cnn")
    csv = {}
    for workers in (1, 2):
        csv[workers] = tmp_path / f"w{workers}.csv"
        assert main(["sense", "--model", "digits-cnn", "--checkpoint", str(checkpoint), "--dataset", "digits",
                     "--levels", "0,0.5,0.9", "--device", "cpu", "--samples", "128", "--workers", str(workers),
                     "--csv", str(csv[workers])]) == 0
    rows = {w: [line.split(",") for line in path.read_text().splitlines()] for w, path in csv.items()}
    assert len(rows[1]) == 1 + 4 * 3 and [r[:4] for r in rows[1]] == [r[:4] for r in rows[2]]
    assert all(abs(float(a[4]) - float(b[4])) <= 1e-5 * abs(float(a[4])) for a, b in zip(rows[1][1:], rows[2][1:],
                                                                                       strict=True))
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["sense", "--help"])
    assert "--workers" in capsys.readouterr().out


@pytest.mark.slow  # a clean interpreter serving one embedded job whose two shards spawn a process each
def test_an_embedded_sweep_runs_its_shards_in_child_processes(tmp_path: Path) -> None:
    """The API process stays torch-free while an embedded sensitivity job's shards run side by side in child
    processes, and the job's points are the library's."""
    import json
    import subprocess
    import sys

    code = (
        "import json, sys, time\n"
        "from fastapi.testclient import TestClient\n"
        "from api.app import create_app\n"
        "from api.shared.settings import Settings\n"
        "from worker.executor import Executor\n"
        f"settings = Settings(data_dir={str(tmp_path / 'data')!r}, heartbeat_stale_s=10, shard_processes=2)\n"
        "with TestClient(create_app(settings, dispatcher=Executor), base_url='http://t/api/v1') as c:\n"
        "    spec = {'model': 'digits-cnn', 'dataset': 'digits', 'levels': [0.0, 0.5], 'samples': 64,\n"
        "            'params': ['conv1.weight', 'conv3.weight'], 'shards': 2}\n"
        "    r = c.post('/jobs', json={'kind': 'sensitivity', 'spec': spec})\n"
        "    assert r.status_code == 201, r.text\n"
        "    for _ in range(1200):\n"
        "        job = c.get(f\"/jobs/{r.json()['id']}\").json()\n"
        "        if job['status'] in ('succeeded', 'failed', 'cancelled'):\n"
        "            break\n"
        "        time.sleep(0.1)\n"
        "    points = c.get(f\"/jobs/{r.json()['id']}/points\").json()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print(json.dumps({'status': job['status'], 'points': points}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["status"] == "succeeded"
    points = out["points"]
    expected = analyze(create_model("digits-cnn"), _loader(), levels=[0.0, 0.5], samples=64, device="cpu",
                       params=["conv1.weight", "conv3.weight"]).points
    assert [(p["parameter"], p["sparsity"], p["top1"]) for p in points] == \
        [(p.parameter, p.sparsity, p.top1) for p in expected]
