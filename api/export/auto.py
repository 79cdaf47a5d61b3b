"""The automatic export: every job that ends goes to ``PRUNESCOPE_MLFLOW_TRACKING_URI``, by whoever ran it.

Called by the runner once the job is settled (the worker process, or the embedded executor's thread), so
a tracker outage or a missing ``prunescope[mlflow]`` is logged and never changes the job.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session, sessionmaker

from api.export.content import from_store
from api.shared.settings import Settings

log = logging.getLogger(__name__)


def export_finished(factory: sessionmaker[Session], settings: Settings, job_id: int) -> str | None:
    """Export job ``job_id`` to the configured tracking URI; the MLflow run id, or None after a logged failure."""
    from api.export.mlflow import export_mlflow

    try:
        with factory() as s:
            export = from_store(s, job_id, settings.data_dir, server=settings.public_url)
        run = export_mlflow(export, settings.mlflow_tracking_uri, settings.mlflow_experiment,
                            artifact_location=settings.mlflow_artifact_location or None)
    except Exception:  # noqa: BLE001 - whatever the tracker raises, the job stays as it ended
        log.exception("job %s: automatic MLflow export to %s failed", job_id, settings.mlflow_tracking_uri)
        return None
    log.info("job %s exported to MLflow run %s (%s)", job_id, run["run_id"], settings.mlflow_tracking_uri)
    return run["run_id"]
