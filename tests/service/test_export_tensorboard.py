"""Issue 18: a job as TensorBoard event files, read back with tensorboard's own event reader."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow  # the shared jobs take ~10 s to run here; the export itself ~1 s


def _read(logdir: str):  # noqa: ANN202 - tensorboard's EventAccumulator
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(logdir, size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _text(acc, tag: str) -> str:  # noqa: ANN001 - an EventAccumulator
    return acc.Tensors(tag)[0].tensor_proto.string_val[0].decode()


def test_every_point_and_epoch_is_a_scalar(finished_jobs: tuple, tmp_path: Path) -> None:
    client, jobs = finished_jobs
    out = client.export_tensorboard(jobs["sensitivity"], tmp_path)
    acc = _read(out["logdir"])
    points = client._json("GET", f"/jobs/{jobs['sensitivity']}/points")
    expected: dict[str, dict[int, float]] = {}
    for p in points:
        for measure in ("top1", "top5", "loss"):
            expected.setdefault(f"sensitivity/{p['parameter']}/{measure}", {})[round(p["sparsity"] * 1000)] = p[measure]
    assert set(acc.Tags()["scalars"]) == set(expected)
    for tag, steps in expected.items():  # TensorBoard keeps float32
        got = {e.step: e.value for e in acc.Scalars(tag)}
        assert set(got) == set(steps) and list(got.values()) == pytest.approx(list(steps.values()), rel=1e-6)
    job = client._json("GET", f"/jobs/{jobs['sensitivity']}")
    spec_text = "\n".join(line.removeprefix("    ") for line in _text(acc, "prunescope/spec.yaml").splitlines())
    assert yaml.safe_load(spec_text) == {"kind": "sensitivity", "spec": job["spec"]}
    assert client.points_csv(jobs["sensitivity"]).splitlines()[1].strip() in _text(
        acc, f"prunescope/sensitivity-{jobs['sensitivity']}.csv")
    if not out["image"]:  # no kaleido here: the skipped figure says why
        assert "kaleido" in _text(acc, "prunescope/figure")
    else:
        assert acc.Tags()["images"] == ["prunescope/sensitivity"]

    out = client.export_tensorboard(jobs["prune"], tmp_path)
    acc = _read(out["logdir"])
    epochs = client._json("GET", f"/jobs/{jobs['prune']}/epochs")
    for name in ("train_loss", "top1", "lr", "sparsity"):
        got = {e.step: e.value for e in acc.Scalars(f"epoch/{name}")}
        assert list(got) == [e["epoch"] for e in epochs]
        assert list(got.values()) == pytest.approx([e[name] for e in epochs], rel=1e-6)


def test_the_cli_exports_a_job_from_a_server(tmp_path: Path) -> None:
    from api.cli import main
    from tests.live import running_server

    with running_server(tmp_path / "data") as server:
        job = server.post("/api/v1/jobs", {"kind": "sensitivity", "spec": {
            "model": "digits-cnn", "dataset": "digits", "levels": "0,0.5", "params": ["fc.weight"]}})
        assert server.wait_job(job["id"])["status"] == "succeeded"
        points = server.get(f"/api/v1/jobs/{job['id']}/points")
        assert main(["export", "tensorboard", str(job["id"]), str(tmp_path / "tb"), "--server", server.url]) == 0
    acc = _read(str(tmp_path / "tb" / f"prunescope-sensitivity-{job['id']}"))
    got = {e.step: e.value for e in acc.Scalars("sensitivity/fc.weight/top1")}
    assert got == pytest.approx({round(p["sparsity"] * 1000): p["top1"] for p in points}, rel=1e-6)
