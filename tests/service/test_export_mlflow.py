"""Issue 18: a finished sensitivity job and a prune job exported to a real MLflow store (SQLite backend and an
artifact folder under tmp_path), read back with MlflowClient and compared with what prunescope serves."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow  # MLflow creates its SQLite schema (tens of migrations) once: ~8 s here


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """One MLflow store (SQLite + an artifact folder) for the module: its schema takes seconds to create."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri).search_experiments()  # the schema, made once, before any export
    return uri, root


def _export(finished_jobs: tuple, kind: str, store: tuple[str, Path]) -> tuple:
    from mlflow import MlflowClient

    client, jobs = finished_jobs
    uri, root = store
    run = client.export_mlflow(jobs[kind], uri, "prunescope-tests", artifact_location=(root / "art").as_uri())
    return client, jobs[kind], MlflowClient(tracking_uri=uri), run


def _spec_params(spec: dict) -> dict[str, str]:
    return {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in spec.items()}


def _history(ml, run_id: str, key: str) -> dict[int, float]:  # noqa: ANN001 - an MlflowClient
    return {m.step: m.value for m in ml.get_metric_history(run_id, key)}


def test_a_sensitivity_job_is_one_run_with_every_point(finished_jobs: tuple, store: tuple, tmp_path: Path) -> None:
    import mlflow

    client, job_id, ml, out = _export(finished_jobs, "sensitivity", store)
    job = client._json("GET", f"/jobs/{job_id}")
    run = ml.get_run(out["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == f"prunescope-sensitivity-{job_id}"
    assert run.data.params == _spec_params(job["spec"])
    tags = run.data.tags
    assert tags["prunescope.job_id"] == str(job_id) and tags["prunescope.kind"] == "sensitivity"
    assert tags["prunescope.server"] == client.url and "per-mille" in tags["prunescope.step_unit"]

    points = client._json("GET", f"/jobs/{job_id}/points")
    assert len(points) == 4 and all(p["measured"] for p in points)
    expected: dict[str, dict[int, float]] = {}
    for p in points:
        for measure in ("top1", "top5", "loss"):
            expected.setdefault(f"sensitivity/{p['parameter']}/{measure}", {})[round(p["sparsity"] * 1000)] = p[measure]
    assert set(run.data.metrics) == set(expected)  # one metric per parameter and measure, nothing else
    for key, steps in expected.items():
        assert _history(ml, out["run_id"], key) == steps

    mlflow.set_tracking_uri(ml.tracking_uri)  # load_table searches runs through mlflow's global client
    try:
        table = ml.load_table(out["experiment_id"], "prunescope/points.json", run_ids=[out["run_id"]])
    finally:
        mlflow.set_tracking_uri(None)
    # MLflow writes tables with pandas' JSON: 10 significant digits (the metrics and the CSV are exact)
    assert table[["parameter", "sparsity", "nnz", "samples"]].to_dict("records") == [
        {k: p[k] for k in ("parameter", "sparsity", "nnz", "samples")} for p in points]
    for column in ("top1", "top5", "loss", "top1_low", "top1_high"):
        assert list(table[column]) == pytest.approx([p[column] for p in points], rel=1e-9)

    files = Path(ml.download_artifacts(out["run_id"], "prunescope", str(tmp_path / "down")))
    assert (files / f"sensitivity-{job_id}.csv").read_text() == client.points_csv(job_id)
    assert yaml.safe_load((files / "spec.yaml").read_text()) == {"kind": "sensitivity", "spec": job["spec"]}
    from pruning_core.report import offline_problems

    assert offline_problems((files / f"report-{job_id}.html").read_text()) == []
    figure = (files / "sensitivity.html").read_text()
    assert all(p["parameter"] in figure for p in points)


def test_a_prune_job_logs_its_epochs_final_metrics_and_files(
        finished_jobs: tuple, store: tuple, tmp_path: Path) -> None:
    client, job_id, ml, out = _export(finished_jobs, "prune", store)
    job = client._json("GET", f"/jobs/{job_id}")
    run = ml.get_run(out["run_id"])
    assert run.data.params == _spec_params(job["spec"])  # the schedule's YAML included (short)
    epochs = client._json("GET", f"/jobs/{job_id}/epochs")
    assert len(epochs) == 2  # the spec's two epochs
    for name in ("train_loss", "top1", "top5", "loss", "lr", "sparsity"):
        assert _history(ml, out["run_id"], f"epoch/{name}") == {e["epoch"]: e[name] for e in epochs}
    for name, value in job["result"]["final"].items():
        assert run.data.metrics[f"final/{name}"] == value
    artifacts = client._json("GET", f"/jobs/{job_id}/artifacts")
    assert {a["kind"] for a in artifacts} >= {"checkpoint", "schedule", "report"}
    files = Path(ml.download_artifacts(out["run_id"], "prunescope/artifacts", str(tmp_path / "down")))
    for a in artifacts:
        assert hashlib.sha256((files / a["name"]).read_bytes()).hexdigest() == a["sha256"]
    assert run.data.tags["prunescope.lineage.produced_model"] == job["result"]["model"]


def test_without_mlflow_the_error_names_the_extra(finished_jobs: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    client, jobs = finished_jobs
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'prunescope\[mlflow\]'"):
        client.export_mlflow(jobs["sensitivity"], "sqlite:///never.db")


def _eventually(check, what: str, timeout: float = 60):  # noqa: ANN001, ANN202
    """The runner exports right after it settles the job, so a test sees the job end first."""
    import time

    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return value


def test_finished_jobs_export_themselves_and_the_rest_endpoint_exports(
        store: tuple, tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture) -> None:
    from fastapi.testclient import TestClient
    from mlflow import MlflowClient

    from api.app import create_app
    from api.shared.settings import Settings
    from tests.service.flow import finished, submit
    from worker.executor import Executor

    uri = store[0]
    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'store.db'}",
                        torch_threads=1, mlflow_tracking_uri=uri, mlflow_experiment="auto",
                        mlflow_artifact_location=(tmp_path / "auto-art").as_uri())
    spec = {"model": "digits-cnn", "dataset": "digits", "levels": "0,0.5", "params": ["conv1.weight"]}
    ml = MlflowClient(tracking_uri=uri)
    with TestClient(create_app(settings, dispatcher=Executor), base_url="http://testserver/api/v1") as api:
        job_id = submit(api, "sensitivity", **spec)
        finished(api, job_id)

        def runs() -> list:
            return ml.search_runs([experiment.experiment_id], f"tags.`prunescope.job_id` = '{job_id}'")
        _eventually(lambda: ml.get_experiment_by_name("auto"), "the automatic export")
        experiment = ml.get_experiment_by_name("auto")
        assert len(_eventually(runs, "the automatic export")) == 1  # exported by the runner as the job ended
        answer = api.post(f"/jobs/{job_id}/export/mlflow", json={})
        assert answer.status_code == 200, answer.text
        assert len(runs()) == 2 and answer.json()["run_id"] in {r.info.run_id for r in runs()}
        exported = ml.get_run(answer.json()["run_id"])
        assert exported.data.tags["prunescope.server"] == "http://testserver/"
        assert set(exported.data.metrics) == {f"sensitivity/conv1.weight/{m}" for m in ("top1", "top5", "loss")}
        # a request may not make the server write a local store of its choosing
        refused = api.post(f"/jobs/{job_id}/export/mlflow", json={"tracking_uri": f"sqlite:///{tmp_path / 'x.db'}"})
        assert refused.status_code == 422 and "http(s)" in refused.json()["detail"]
        assert api.post("/jobs/999/export/mlflow", json={}).status_code == 404
        # an export that fails is logged; the job still ends as it ran
        settings.mlflow_tracking_uri = "unknown-scheme://nowhere"
        failing = submit(api, "sensitivity", **spec)
        assert finished(api, failing)["status"] == "succeeded"
        # a shard in the server's thread logs here; one in a child process (shard_processes) to stderr
        written = [r.getMessage() for r in caplog.records]

        def logged() -> bool:
            written.extend([capfd.readouterr().err, *(r.getMessage() for r in caplog.records)])
            return any(f"job {failing}: automatic MLflow export" in text for text in written)
        _eventually(logged, "the failed export to be logged")
        assert api.get(f"/jobs/{failing}").json()["status"] == "succeeded"
