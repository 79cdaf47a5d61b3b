"""What a prunescope job exports to an experiment tracker: one description, written by each tracker's writer.

A :class:`JobExport` holds a job as the REST API shows it (the job, its points, its epochs, its artifact
files) and derives everything a tracker records: the spec as params, tags linking back to the job and its
lineage, sensitivity points as metric series (sparsity as the step, in per-mille: trackers' steps are
integers), per-epoch series, the points table, the curves' plotly figure, the CSV, the spec as YAML and the
HTML report. It is built from a server through the client (:func:`from_client`, any server) or from the store
(:func:`from_store`: the REST endpoint and the automatic export when a job finishes). Torch-free, so the API
process may export; the writers (:mod:`api.export.mlflow`, :mod:`api.export.tensorboard`) import their
tracker lazily.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.store.models import Artifact, EpochMetric, Job, ModelEntry
from api.store.repo import EPOCH_COLUMNS, point_rows
from pruning_core.points import POINT_FIELDS, SensitivityPoint, csv_text, metric_names, metric_value

if TYPE_CHECKING:
    from api.client import Client

#: Sensitivity points are logged with ``step = round(sparsity * STEP_SCALE)`` (trackers' steps are integers).
STEP_SCALE = 1000
STEP_UNIT = "sparsity per-mille (step = round(sparsity * 1000))"
#: Spec values longer than this (a schedule's YAML) are params by reference: the full text is in ``spec.yaml``.
MAX_PARAM_CHARS = 500
#: Where a run's files go, inside the tracker's run: ``prunescope/spec.yaml``, ``prunescope/artifacts/<name>``.
FOLDER = "prunescope"


@dataclass
class ExportFile:
    """One of the job's artifacts (checkpoint, schedule, report) with its bytes."""

    name: str
    kind: str
    data: bytes


@dataclass
class JobExport:
    """A job as a tracker records it; the fields are the REST representation (plain JSON values)."""

    job: dict[str, Any]
    points: list[dict[str, Any]] = field(default_factory=list)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    files: list[ExportFile] = field(default_factory=list)
    server: str = ""
    #: job ids this one came from: ``sensitivity_job`` (a launched plan), ``model_job`` (its model's trainer)
    lineage: dict[str, Any] = field(default_factory=dict)

    @property
    def job_id(self) -> int:
        return int(self.job["id"])

    @property
    def kind(self) -> str:
        return str(self.job["kind"])

    @property
    def run_name(self) -> str:
        return f"prunescope-{self.kind}-{self.job_id}"

    def params(self) -> dict[str, str]:
        """The spec, one param per field (lists and mappings as JSON); a long value names ``spec.yaml``."""
        out = {}
        for key, value in sorted((self.job.get("spec") or {}).items()):
            text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
            out[key] = text if len(text) <= MAX_PARAM_CHARS else f"({len(text)} characters: see {FOLDER}/spec.yaml)"
        return out

    def tags(self) -> dict[str, str]:
        """Tags linking the run back to the job, its server and what it came from."""
        tags = {"prunescope.job_id": str(self.job_id), "prunescope.kind": self.kind,
                "prunescope.status": str(self.job.get("status")), "prunescope.step_unit": STEP_UNIT}
        if self.server:
            tags["prunescope.server"] = self.server
            tags["prunescope.job_url"] = f"{self.server.rstrip('/')}/api/v1/jobs/{self.job_id}"
        for key in ("experiment_id", "code_version", "device", "worker", "error"):
            if self.job.get(key) not in (None, ""):
                tags[f"prunescope.{key}"] = str(self.job[key])[:MAX_PARAM_CHARS]
        for key, value in self.lineage.items():
            tags[f"prunescope.lineage.{key}"] = str(value)
        return tags

    def sensitivity_points(self) -> list[SensitivityPoint]:
        return [SensitivityPoint(**{k: p.get(k) for k in POINT_FIELDS}) for p in self.points]

    def measures(self) -> list[str]:
        """The metrics the points have (top1, top5, loss, then the task's own: perplexity, a custom one)."""
        return metric_names(self.points)

    def point_series(self) -> dict[str, list[tuple[int, float]]]:
        """``sensitivity/<parameter>/<measure>`` -> [(step, value)] over the measured points, by sparsity."""
        series: dict[str, list[tuple[int, float]]] = {}
        measures = self.measures()
        for p in sorted(self.points, key=lambda p: (p["parameter"], p["sparsity"])):
            if p.get("measured") is False:
                continue
            for measure in measures:
                value = metric_value(p, measure)
                if value is not None:
                    series.setdefault(f"sensitivity/{p['parameter']}/{measure}", []).append(
                        (sparsity_step(p["sparsity"]), value))
        return series

    def epoch_series(self) -> dict[str, list[tuple[int, float]]]:
        """``epoch/<field>`` -> [(epoch, value)]: the typed fields, then numeric keys of each epoch's data."""
        series: dict[str, list[tuple[int, float]]] = {}
        for e in sorted(self.epochs, key=lambda e: e["epoch"]):
            values = {k: e.get(k) for k in EPOCH_COLUMNS}
            values.update({k: v for k, v in (e.get("data") or {}).items() if k not in values and k != "epoch"})
            for key, value in values.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    series.setdefault(f"epoch/{key}", []).append((int(e["epoch"]), float(value)))
        return series

    def final_metrics(self) -> dict[str, float]:
        """The job's final evaluation (train and prune jobs), as ``final/<measure>``."""
        final = (self.job.get("result") or {}).get("final") or {}
        return {f"final/{k}": float(v) for k, v in final.items()
                if isinstance(v, int | float) and not isinstance(v, bool)}

    def table(self) -> dict[str, list[Any]]:
        """The points as columns (every point field; ``metrics`` as JSON text), for a tracker's table."""
        columns: dict[str, list[Any]] = {name: [] for name in POINT_FIELDS}
        for p in self.points:
            for name in POINT_FIELDS:
                value = p.get(name)
                columns[name].append(json.dumps(value, sort_keys=True) if name == "metrics" and value else value)
        return columns

    def csv_text(self) -> str:
        """Distiller's CSV, as ``GET /jobs/{id}/points.csv`` serves it."""
        return csv_text(self.points)

    def spec_yaml(self) -> str:
        return yaml.safe_dump({"kind": self.kind, "spec": self.job.get("spec") or {}}, sort_keys=False)

    def texts(self) -> dict[str, str]:
        """Text files of the run: the spec, and for sensitivity jobs the CSV."""
        out = {"spec.yaml": self.spec_yaml()}
        if self.points:
            out[f"sensitivity-{self.job_id}.csv"] = self.csv_text()
        return out

    def figure(self) -> Any:
        """The sensitivity curves (the HTML report's plotly figure), or None without points."""
        if not self.points:
            return None
        from pruning_core.report import build_figure

        return build_figure(self.sensitivity_points(), title=f"Sensitivity of job {self.job_id}")

    def report_html(self) -> str | None:
        """The offline HTML report ``prunescope sense --html`` writes, or None without points."""
        if not self.points:
            return None
        from pruning_core.report import write_html

        with tempfile.TemporaryDirectory() as tmp:
            path = write_html(self.sensitivity_points(), Path(tmp) / "report.html",
                              title=f"Sensitivity of job {self.job_id}")
            return path.read_text()


def sparsity_step(sparsity: float) -> int:
    """A sparsity as a tracker's integer step (per-mille)."""
    return int(round(float(sparsity) * STEP_SCALE))


def _lineage(result: dict[str, Any] | None, model_job: int | None) -> dict[str, Any]:
    lineage = {k: v for k, v in ((result or {}).get("lineage") or {}).items() if k != "plan"}
    if model_job is not None:
        lineage["model_job"] = model_job
    if (result or {}).get("model"):
        lineage["produced_model"] = result["model"]
    return lineage


def from_client(client: Client, job_id: int) -> JobExport:
    """A job as ``client``'s server serves it (any server the client reaches)."""
    from api.client.errors import PrunescopeError

    job = client._json("GET", f"/jobs/{job_id}")
    points = client._json("GET", f"/jobs/{job_id}/points") if job["kind"] == "sensitivity" else []
    epochs = client._json("GET", f"/jobs/{job_id}/epochs") if job["kind"] != "sensitivity" else []
    files = [ExportFile(a.name, a.kind, client.download(a)) for a in client.artifacts(job_id)]
    model_job = None
    model = (job.get("spec") or {}).get("model")
    if model:
        try:
            model_job = client._json("GET", f"/models/{model}").get("source_job_id")
        except PrunescopeError:  # an architecture name, not a registered model
            model_job = None
    return JobExport(job, points, epochs, files, server=client.url, lineage=_lineage(job.get("result"), model_job))


def _row(obj: Any, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in names}


_JOB_FIELDS = ("id", "kind", "experiment_id", "spec", "status", "error", "worker", "device", "code_version",
               "result")


def from_store(session: Session, job_id: int, data_dir: Path, *, server: str = "") -> JobExport:
    """A job read from the store (the API process and the worker); a LookupError if there is none."""
    job = session.get(Job, job_id)
    if job is None:
        raise LookupError(f"job {job_id} not found")
    points = point_rows(session, job_id)
    epochs = [_row(r, ("epoch", *EPOCH_COLUMNS, "data")) for r in session.scalars(
        select(EpochMetric).where(EpochMetric.job_id == job_id).order_by(EpochMetric.epoch))]
    files = [ExportFile(a.name, a.kind, (data_dir / a.path).read_bytes()) for a in session.scalars(
        select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.id)) if (data_dir / a.path).is_file()]
    model = (job.spec or {}).get("model")
    entry = session.scalar(select(ModelEntry).where(ModelEntry.name == model)) if model else None
    return JobExport(_row(job, _JOB_FIELDS), points, epochs, files, server=server,
                     lineage=_lineage(job.result, entry.source_job_id if entry is not None else None))
