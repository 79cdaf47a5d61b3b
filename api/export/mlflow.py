"""A job as one MLflow run: params, tags, metric histories, the points table, the figure and the files.

Written through ``mlflow.MlflowClient`` on the given tracking URI, never the process-wide ``mlflow``
state, so a server exporting for many users keeps none. MLflow is optional (``prunescope[mlflow]``) and
imported only here, when an export runs.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from api.export.content import FOLDER, JobExport

#: The experiment a run goes to when none is named.
DEFAULT_EXPERIMENT = "prunescope"
MISSING = "MLflow export needs the mlflow package: pip install 'prunescope[mlflow]'"
#: MLflow's batch bounds (log_batch): at most 1000 metrics and 100 params per call.
_METRICS_PER_BATCH, _PARAMS_PER_BATCH = 1000, 100
_RUN_STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}


def mlflow_client(tracking_uri: str) -> Any:
    """An ``MlflowClient`` on ``tracking_uri``; a clear ImportError naming the extra when mlflow is missing."""
    try:
        from mlflow import MlflowClient
    except ImportError as exc:
        raise ImportError(MISSING) from exc
    return MlflowClient(tracking_uri=tracking_uri)


def _experiment_id(client: Any, name: str, artifact_location: str | None) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location)


def export_mlflow(export: JobExport, tracking_uri: str, experiment: str | None = None, *,
                  artifact_location: str | None = None) -> dict[str, str]:
    """Log ``export`` as one run; returns ``{run_id, experiment_id, tracking_uri}``.

    Sensitivity metrics are ``sensitivity/<parameter>/<measure>`` with the sparsity in per-mille as the step
    (tag ``prunescope.step_unit``); epochs are ``epoch/<field>`` with the epoch as the step. ``artifact_location``
    is used only when the experiment is created here."""
    from mlflow.entities import Metric, Param

    client = mlflow_client(tracking_uri)
    experiment_id = _experiment_id(client, experiment or DEFAULT_EXPERIMENT, artifact_location)
    run = client.create_run(experiment_id, run_name=export.run_name, tags=export.tags())
    run_id = run.info.run_id
    try:
        params = [Param(k, v) for k, v in export.params().items()]
        for i in range(0, len(params), _PARAMS_PER_BATCH):
            client.log_batch(run_id, params=params[i:i + _PARAMS_PER_BATCH])
        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, step) for key, series in
                   {**export.point_series(), **export.epoch_series()}.items() for step, value in series]
        metrics += [Metric(key, value, now, 0) for key, value in export.final_metrics().items()]
        for i in range(0, len(metrics), _METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=metrics[i:i + _METRICS_PER_BATCH])
        if export.points:
            client.log_table(run_id, data=export.table(), artifact_file=f"{FOLDER}/points.json")
            client.log_figure(run_id, export.figure(), f"{FOLDER}/sensitivity.html")
            client.log_text(run_id, export.report_html(), f"{FOLDER}/report-{export.job_id}.html")
        for name, text in export.texts().items():
            client.log_text(run_id, text, f"{FOLDER}/{name}")
        if export.files:
            with tempfile.TemporaryDirectory() as tmp:
                for f in export.files:
                    path = Path(tmp) / f.name
                    path.write_bytes(f.data)
                    client.log_artifact(run_id, str(path), artifact_path=f"{FOLDER}/artifacts")
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status=_RUN_STATUS.get(str(export.job.get("status")), "FINISHED"))
    return {"run_id": run_id, "experiment_id": str(experiment_id), "tracking_uri": tracking_uri}
