"""The Python client of REST v1: one method per resource action, typed results, API errors as exceptions.

Methods mirror the routes (``jobs``, ``job``, ``cancel``, ``points`` …) and the CLI (``train``,
``sense``, ``prune`` take the same arguments as ``prunescope train/sense/prune``). torch is
imported only by :meth:`Client.upload_model` when it is handed an ``nn.Module``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import httpx

from api.client.errors import JobFailed, PrunescopeError
from api.client.frames import compare_frame, epochs_frame, points_frame, sensitivity_figure
from api.client.resources import Artifact, Dataset, Event, Experiment, Job, Model, ScheduleCheck, _Resource

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

API_PREFIX = "/api/v1"
R = TypeVar("R", bound=_Resource)
JobRef = int | Job
OptionValue = str | int | float | bool
DatasetOptions = Mapping[str, OptionValue] | Sequence[str] | None
CheckpointSource = str | os.PathLike | bytes | Any  # Any: an nn.Module (not imported: torch stays out)


def _job_id(job: JobRef) -> int:
    return job.id if isinstance(job, Job) else int(job)


def _experiment_id(experiment: int | Experiment | None) -> int | None:
    return experiment.id if isinstance(experiment, Experiment) else experiment


def _option_value(text: str) -> OptionValue:
    """``n=1000`` -> 1000, ``flip=true`` -> True, ``shape=1x8x8`` stays text, as the CLI means them."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def dataset_options(options: DatasetOptions) -> dict[str, OptionValue]:
    """A dict, or the CLI's repeated ``key=value`` strings, as the API's ``dataset_options``."""
    if options is None:
        return {}
    if isinstance(options, Mapping):
        return dict(options)
    parsed: dict[str, OptionValue] = {}
    for pair in options:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"dataset option {pair!r}: expected key=value, e.g. root=/data/cifar")
        parsed[key.strip()] = _option_value(value.strip())
    return parsed


def _schedule_text(schedule: str | os.PathLike) -> str:
    """A schedule given as YAML text or as a file path: a Path, or a one-line str without ``": "``.

    A path that does not exist raises FileNotFoundError rather than being sent as YAML, so a typo
    in a file name is reported as such.
    """
    if isinstance(schedule, os.PathLike) or ("\n" not in schedule and ": " not in schedule):
        return Path(schedule).read_text()
    return schedule


def _progress_bar(total: int, desc: str, unit: str) -> Any:
    """tqdm.auto (a widget in Jupyter); without ipywidgets it falls back to text without a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from tqdm.auto import tqdm

        return tqdm(total=total or None, desc=desc, unit=unit, mininterval=0.5, leave=True)


class Client:
    """A prunescope server (``Client(url, token)``) or the same service in this process (``Client.local()``).

    ``url`` defaults to ``$PRUNESCOPE_URL`` and ``token`` to ``$PRUNESCOPE_TOKEN`` (sent as
    ``Authorization: Bearer``). ``progress`` is the default of :meth:`wait`'s progress bar. Use it as
    a context manager or call :meth:`close`.
    """

    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 60.0,
                 progress: bool = True, transport: httpx.BaseTransport | None = None) -> None:
        if transport is None:  # the environment names the server; a given transport is its own server
            url = url or os.environ.get("PRUNESCOPE_URL")
            token = token if token is not None else os.environ.get("PRUNESCOPE_TOKEN")
            if not url:
                raise ValueError("no server URL: pass Client(url) or set PRUNESCOPE_URL, "
                                 "or run without a server with Client.local()")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = (url or "http://prunescope.local").rstrip("/")
        self.progress = progress
        self._label = f"Client({self.url!r})"
        self._http = httpx.Client(base_url=self.url + API_PREFIX, headers=headers, timeout=timeout,
                                  transport=transport)

    @classmethod
    def local(cls, data_dir: str | os.PathLike | None = None, *, timeout: float = 60.0,
              progress: bool = True) -> Client:
        """The embedded service in this process: SQLite under ``data_dir`` (default ``$PRUNESCOPE_DATA_DIR``
        or ``./prunescope-data``), jobs run by the same executor and runner as ``prunescope serve``."""
        from api.client.local import local_transport

        transport = local_transport(data_dir)
        client = cls(None, None, timeout=timeout, progress=progress, transport=transport)
        client._label = f"Client.local({str(transport.data_dir)!r})"
        return client

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return self._label

    # -- transport -------------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call; a transport failure or an error status becomes a PrunescopeError with the API's message."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise PrunescopeError(None, f"cannot reach prunescope at {self.url}: {exc}") from None
        _raise_for_status(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    def _one(self, cls: type[R], method: str, path: str, **kwargs: Any) -> R:
        return cls.from_json(self._json(method, path, **kwargs))

    def _many(self, cls: type[R], path: str, **kwargs: Any) -> list[R]:
        return [cls.from_json(item) for item in self._json("GET", path, **kwargs)]

    def _job(self, data: dict[str, Any]) -> Job:
        return Job.from_json(data, client=self)

    # -- health ----------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``/healthz``: the store's and the broker's state (raises with status 503 when unhealthy)."""
        return self._json("GET", "/healthz")

    # -- jobs ------------------------------------------------------------------------------------

    def submit(self, kind: Literal["train", "sensitivity", "prune", "plan"], spec: Mapping[str, Any], *,
               experiment: int | Experiment | None = None) -> Job:
        """``POST /jobs`` with a raw spec (the typed ``train``/``sense``/``prune`` build it for you)."""
        body = {"kind": kind, "spec": dict(spec), "experiment_id": _experiment_id(experiment)}
        return self._job(self._json("POST", "/jobs", json=body))

    def jobs(self, *, status: str | None = None, kind: str | None = None,
             experiment: int | Experiment | None = None, limit: int = 50, offset: int = 0) -> list[Job]:
        """Newest first, filtered like ``GET /jobs?status=&kind=&experiment=``."""
        filters = {"status": status, "kind": kind, "experiment": _experiment_id(experiment)}
        params = {k: v for k, v in filters.items() if v is not None}
        page = self._json("GET", "/jobs", params={**params, "limit": limit, "offset": offset})
        return [self._job(item) for item in page["items"]]

    def job(self, job: JobRef) -> Job:
        return self._job(self._json("GET", f"/jobs/{_job_id(job)}"))

    def cancel(self, job: JobRef) -> Job:
        """Cooperative cancel: a running job stops after its current point or epoch."""
        return self._job(self._json("POST", f"/jobs/{_job_id(job)}/cancel"))

    def delete(self, job: JobRef) -> None:
        """Remove a finished job with its points, epochs and artifacts (not models registered from it)."""
        self._request("DELETE", f"/jobs/{_job_id(job)}")

    def wait(self, job: JobRef, *, timeout: float | None = None, poll: float = 0.5, progress: bool | None = None,
             raise_on_failure: bool = True) -> Job:
        """Block until the job ends, with a progress bar (points or epochs); return its final state.

        A failed or cancelled job raises :class:`JobFailed` carrying the job's error unless
        ``raise_on_failure`` is False; ``timeout`` (seconds) raises TimeoutError, the job keeps running.
        """
        state = self.job(job)
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = None
        if (self.progress if progress is None else progress) and not state.done:
            unit = "point" if state.kind == "sensitivity" else "epoch"
            bar = _progress_bar(state.progress_total, f"job {state.id} {state.kind}", unit)
        try:
            while True:
                if bar is not None:
                    bar.total = state.progress_total or None
                    bar.n = state.progress_done
                    bar.set_postfix_str(state.status, refresh=True)
                if state.done:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"job {state.id} is still {state.status} after {timeout:g} s")
                time.sleep(poll)
                state = self.job(state.id)
        finally:
            if bar is not None:
                bar.close()
        if raise_on_failure and state.status != "succeeded":
            raise JobFailed(state)
        return state

    def events(self, job: JobRef, *, poll: float = 0.5, points: bool = True) -> Iterator[Event]:
        """``/jobs/{id}/events`` (server-sent events): ``progress``, ``point`` per new point (unless
        ``points=False``), then ``end``."""
        return self._stream(f"/jobs/{_job_id(job)}/events", {"poll_s": poll, "points": points})

    def job_events(self, *, status: str | None = None, kind: str | None = None,
                   experiment: int | Experiment | None = None, poll: float = 0.5,
                   max_s: float | None = None) -> Iterator[Event]:
        """``/jobs/events``: a ``job`` event (the job's summary) whenever a job appears or its status or
        progress changes, ``deleted`` when one goes; endless unless ``max_s`` (then a final ``end``)."""
        filters = {"status": status, "kind": kind, "experiment": _experiment_id(experiment), "max_s": max_s}
        return self._stream("/jobs/events", {"poll_s": poll, **{k: v for k, v in filters.items() if v is not None}})

    def _stream(self, path: str, params: dict[str, Any]) -> Iterator[Event]:
        try:
            with self._http.stream("GET", path, params=params, timeout=None) as response:
                if response.status_code >= 400:
                    response.read()
                    _raise_for_status(response)
                yield from _parse_sse(response.iter_lines())
        except httpx.TransportError as exc:
            raise PrunescopeError(None, f"cannot reach prunescope at {self.url}: {exc}") from None

    # -- the CLI's jobs --------------------------------------------------------------------------

    def _data_spec(self, model: str, dataset: str, checkpoint: CheckpointSource | None,
                   options: DatasetOptions, **fields: Any) -> dict[str, Any]:
        """The model/dataset part of every spec and the ``fields`` given; a checkpoint is uploaded (once per
        content) first. A field left None is left out: the server's spec model fills in its default."""
        if checkpoint is not None:
            model = self.ensure_model(checkpoint, model).name
        spec = {"model": model, "dataset": dataset, **_given(**fields)}
        if options:
            spec["dataset_options"] = dataset_options(options)
        return spec

    def _run(self, kind: Literal["train", "sensitivity", "prune"], spec: dict[str, Any],
             experiment: int | Experiment | None, wait: bool) -> Job:
        job = self.submit(kind, spec, experiment=experiment)
        return self.wait(job) if wait else job

    # The options of train/sense/prune mirror the CLI's; one left None takes the default of the job's spec
    # model (api.schemas.TrainSpec, SensitivitySpec, PruneSpec), the one place defaults are written.

    def train(self, model: str, dataset: str, *, checkpoint: CheckpointSource | None = None,
              dataset_options: DatasetOptions = None, epochs: int | None = None, optimizer: str | None = None,
              lr: float | None = None, momentum: float | None = None, weight_decay: float | None = None,
              seed: int | None = None, batch_size: int | None = None, device: str | None = None,
              register_as: str | None = None, model_kind: str | None = None,
              experiment: int | Experiment | None = None, wait: bool = True) -> Job:
        """``prunescope train``: the trained model is registered (as ``register_as`` or ``<arch>-job<N>``).
        Options left None take TrainSpec's defaults."""
        spec = self._data_spec(model, dataset, checkpoint, dataset_options, batch_size=batch_size, device=device,
                               model_kind=model_kind,
                               epochs=epochs, optimizer=optimizer, lr=lr, momentum=momentum,
                               weight_decay=weight_decay, seed=seed, register_as=register_as)
        return self._run("train", spec, experiment, wait)

    def sense(self, model: str, dataset: str, *, checkpoint: CheckpointSource | None = None,
              dataset_options: DatasetOptions = None, split: str | None = None, group: str | None = None,
              levels: str | Sequence[float] | None = None, params: Sequence[str] | None = None,
              samples: int | None = None, seed: int | None = None, early_stop: float | None = None,
              amp: bool | None = None, coupled: bool | None = None, latency: bool | None = None,
              engine: str | None = None, shards: int | None = None, batch_size: int | None = None,
              device: str | None = None, model_kind: str | None = None,
              adaptive_tolerance: float | None = None, adaptive_confidence: float | None = None,
              memory_mb: float | None = None,
              experiment: int | Experiment | None = None, wait: bool = True) -> Job:
        """``prunescope sense``: a sensitivity sweep; ``model`` is an architecture or a registered model name.
        ``early_stop`` is the CLI's ``--early-stop`` top1 floor (%); ``adaptive_tolerance`` (top1 points) opts in
        to adaptive evaluation, whose stopped points are flagged approximate. Options left None take
        SensitivitySpec's defaults (levels ``0:0.95:0.05``, element group, every conv and linear weight)."""
        spec = self._data_spec(
            model, dataset, checkpoint, dataset_options, batch_size=batch_size, device=device, split=split,
            model_kind=model_kind,
            group=group, levels=levels if levels is None or isinstance(levels, str) else list(levels),
            params=None if params is None else list(params), samples=samples, seed=seed, early_stop=early_stop,
            amp=amp, coupled=coupled, latency=latency, engine=engine, shards=shards,
            adaptive_tolerance=adaptive_tolerance, adaptive_confidence=adaptive_confidence, memory_mb=memory_mb)
        return self._run("sensitivity", spec, experiment, wait)

    def prune(self, model: str, dataset: str, schedule: str | os.PathLike, *,
              checkpoint: CheckpointSource | None = None, dataset_options: DatasetOptions = None,
              epochs: int | None = None, lr: float | None = None, optimizer: str | None = None,
              momentum: float | None = None, weight_decay: float | None = None, seed: int | None = None,
              start_epoch: int | None = None, thin: bool | None = None, latency_batch: int | None = None,
              batch_size: int | None = None, device: str | None = None, register_as: str | None = None,
              model_kind: str | None = None, experiment: int | Experiment | None = None, wait: bool = True) -> Job:
        """``prunescope prune``: run a Distiller YAML schedule (text or file) while fine-tuning. Options left
        None take PruneSpec's defaults."""
        spec = self._data_spec(model, dataset, checkpoint, dataset_options, batch_size=batch_size, device=device,
                               model_kind=model_kind, schedule=_schedule_text(schedule), epochs=epochs, lr=lr,
                               optimizer=optimizer, momentum=momentum, weight_decay=weight_decay, seed=seed,
                               start_epoch=start_epoch, thin=thin, latency_batch=latency_batch, register_as=register_as)
        return self._run("prune", spec, experiment, wait)

    # -- results ---------------------------------------------------------------------------------

    def points(self, job: JobRef, parameter: str | None = None) -> pd.DataFrame:
        """A sensitivity job's points, every field (intervals, nnz, MACs, flags), one row per point."""
        params = {"parameter": parameter} if parameter is not None else None
        return points_frame(self._json("GET", f"/jobs/{_job_id(job)}/points", params=params))

    def points_csv(self, job: JobRef, path: str | os.PathLike | None = None) -> str:
        """Distiller's CSV (``parameter,sparsity,top1,top5,loss``); also written to ``path`` when given."""
        text = self._request("GET", f"/jobs/{_job_id(job)}/points.csv").text
        if path is not None:
            Path(path).write_text(text)
        return text

    def epochs(self, job: JobRef) -> pd.DataFrame:
        """A train or prune job's per-epoch metrics."""
        return epochs_frame(self._json("GET", f"/jobs/{_job_id(job)}/epochs"))

    def plot(self, job: JobRef | pd.DataFrame, metric: str = "top1", title: str | None = None) -> go.Figure:
        """The sensitivity curves of a job (or of a ``points()`` frame): one line per parameter against
        sparsity, ``metric`` any the points have (top1, top5, loss, perplexity, a custom one), with 95 %
        bands for top1/top5."""
        frame = job if not isinstance(job, int | Job) else self.points(job)
        if title is None and isinstance(job, int | Job):
            title = f"Sensitivity of job {_job_id(job)}: {metric}"
        return sensitivity_figure(frame, metric, title)

    def compare(self, jobs: Sequence[JobRef], metric: str = "top1") -> pd.DataFrame:
        """Sensitivity jobs side by side: ``metric`` (any the jobs' points have) per (parameter, sparsity), a
        column ``job N`` each."""
        return compare_frame(self._json("GET", "/compare",
                                        params={"jobs": [_job_id(j) for j in jobs], "metric": metric}))

    def log_sensitivity(self, result: Any, *, model: str, dataset: str,
                        experiment: int | Experiment | None = None, group: str | None = None,
                        dataset_options: DatasetOptions = None) -> Job:
        """Track an analysis that ran in this process (``pruning_core.sensitivity.analyze``'s result, a list of
        SensitivityPoint, or a ``points()``-style DataFrame), with whichever metrics its points have (top1/top5
        where the task has them, ``metrics`` such as perplexity): ``POST /jobs/import`` makes it a succeeded
        sensitivity job, compared, planned and shown like any other. Name a model the server knows (an
        architecture or a registered model) to launch plans from it; ``group`` defaults to the result's."""
        from pruning_core.points import POINT_FIELDS

        skipped = [{"parameter": s.parameter, "reason": s.reason} for s in getattr(result, "skipped", None) or []]
        if group is None and isinstance(getattr(result, "info", None), Mapping):
            group = result.info.get("group")
        points = getattr(result, "points", result)
        if hasattr(points, "to_dict") and hasattr(points, "columns"):  # a DataFrame
            rows: list[Any] = points.to_dict("records")
        else:
            rows = [p if isinstance(p, Mapping) else p.to_dict() for p in points]
        body = {**self._data_spec(model, dataset, None, dataset_options),
                "points": [_point_json(r, POINT_FIELDS) for r in rows], "skipped": skipped,
                **_given(group=group, experiment_id=_experiment_id(experiment))}
        return self._job(self._json("POST", "/jobs/import", json=body))

    # -- artifacts -------------------------------------------------------------------------------

    def artifacts(self, job: JobRef) -> list[Artifact]:
        """What a job produced: checkpoints, the schedule it ran, reports."""
        return self._many(Artifact, f"/jobs/{_job_id(job)}/artifacts")

    def artifact(self, artifact_id: int) -> Artifact:
        return self._one(Artifact, "GET", f"/artifacts/{artifact_id}")

    def download(self, artifact: int | Artifact, path: str | os.PathLike | None = None) -> bytes:
        """An artifact's bytes, checked against the server's sha256; also written to ``path`` when given
        (a directory gets the artifact's own name)."""
        art = artifact if isinstance(artifact, Artifact) else self.artifact(artifact)
        response = self._request("GET", f"/artifacts/{art.id}/download")
        data = response.content
        expected = response.headers.get("x-checksum-sha256", art.sha256)
        if hashlib.sha256(data).hexdigest() != expected:
            raise PrunescopeError(None, f"artifact {art.id}: downloaded bytes do not match sha256 {expected}")
        if path is not None:
            target = Path(path)
            (target / art.name if target.is_dir() else target).write_bytes(data)
        return data

    # -- models ----------------------------------------------------------------------------------

    def models(self) -> list[Model]:
        return self._many(Model, "/models")

    def model(self, name: str) -> Model:
        return self._one(Model, "GET", f"/models/{name}")

    def job_model(self, job: JobRef) -> Model:
        """The model a train or prune job registered (``register_as``, or ``<arch>-job<N>`` by default)."""
        job_id = _job_id(job)
        found = [m for m in self.models() if m.source_job_id == job_id]
        if not found:
            raise PrunescopeError(None, f"job {job_id} has registered no model (yet): only a succeeded train or "
                                        "prune job does")
        return found[-1]

    def upload_model(self, name: str, source: CheckpointSource, architecture: str) -> Model:
        """Register a checkpoint: a file path, its bytes, or an ``nn.Module`` (its state_dict is saved)."""
        data, filename = _checkpoint_bytes(source, name)
        files = {"checkpoint": (filename, data, "application/octet-stream")}
        return self._one(Model, "POST", "/models", data={"name": name, "architecture": architecture}, files=files)

    def ensure_model(self, source: CheckpointSource, architecture: str, name: str | None = None) -> Model:
        """The registered model holding exactly these weights, uploading them only if none does.

        The default name is ``<architecture>-<first 12 hex of the sha256>``, so re-running a
        notebook cell never uploads the same checkpoint twice.
        """
        data, _ = _checkpoint_bytes(source, architecture)
        digest = hashlib.sha256(data).hexdigest()
        for model in self.models():
            if model.checkpoint_sha256 == digest and (name is None or model.name == name):
                return model
        return self.upload_model(name or f"{architecture}-{digest[:12]}", data, architecture)

    # -- datasets and experiments ----------------------------------------------------------------

    def datasets(self) -> list[Dataset]:
        """Built-in dataset names and registered ones."""
        return self._many(Dataset, "/datasets")

    def dataset(self, name: str) -> Dataset:
        return self._one(Dataset, "GET", f"/datasets/{name}")

    def register_dataset(self, name: str, kind: str, root: str | None = None,
                         options: DatasetOptions = None) -> Dataset:
        """Bind a name to a dataset kind, a root (under the server's dataset roots) and options."""
        body = {"name": name, "kind": kind, "root": root, "options": dataset_options(options)}
        return self._one(Dataset, "POST", "/datasets", json=body)

    def experiments(self, tag: str | None = None) -> list[Experiment]:
        return self._many(Experiment, "/experiments", params={"tag": tag} if tag else None)

    def experiment(self, experiment_id: int) -> Experiment:
        return self._one(Experiment, "GET", f"/experiments/{experiment_id}")

    def create_experiment(self, name: str, description: str = "", tags: Sequence[str] = ()) -> Experiment:
        body = {"name": name, "description": description, "tags": list(tags)}
        return self._one(Experiment, "POST", "/experiments", json=body)

    # -- schedules and plans ---------------------------------------------------------------------

    def validate_schedule(self, schedule: str | os.PathLike) -> ScheduleCheck:
        """Check a Distiller YAML schedule (text or file); an invalid one is reported, not raised."""
        return self._one(ScheduleCheck, "POST", "/schedules/validate", json={"yaml": _schedule_text(schedule)})

    def plan(self, sensitivity_job: JobRef, max_drop: float | None = None, *, target_sparsity: float | None = None,
             metric: str | None = None, higher_is_better: bool | None = None, epochs: int | None = None,
             one_shot: bool | None = None, objective: str | None = None, budget: float | None = None,
             target: float | None = None, interpolate: int | None = None) -> str:
        """A schedule's YAML (AGP, or everything at epoch 0 with ``one_shot``): the equal-tolerance rule (per layer
        the highest sparsity within ``max_drop``, the metric's drop where higher is better, e.g. top1 points, its
        rise where lower is, e.g. loss; or the least damage reaching ``target_sparsity``), or with ``objective``
        (sparsity, macs, latency) the optimiser's plan under a ``budget`` on the summed predicted damage or
        reaching a ``target`` fraction with the least (see :meth:`compare_plans`). ``metric`` is any the job's
        points have; a custom one needs ``higher_is_better``. Options left None take PlanRequest's defaults."""
        return self.compare_plans(sensitivity_job, max_drop, target_sparsity=target_sparsity, metric=metric,
                                  higher_is_better=higher_is_better, epochs=epochs, one_shot=one_shot,
                                  objective=objective, budget=budget, target=target, interpolate=interpolate)["yaml"]

    def compare_plans(self, sensitivity_job: JobRef, max_drop: float | None = None, *,
                      target_sparsity: float | None = None, metric: str | None = None,
                      higher_is_better: bool | None = None, epochs: int | None = None, one_shot: bool | None = None,
                      objective: str | None = None, budget: float | None = None, target: float | None = None,
                      interpolate: int | None = None) -> dict[str, Any]:
        """``POST /plans``'s whole answer: ``yaml``, ``levels``, ``overall_sparsity``; with ``objective`` also
        ``plan`` (predicted drop, gain, optimality gap) and ``baselines`` (uniform, equal-tolerance) at the same
        goal, predicted. :meth:`measure_plan` measures them."""
        return self._json("POST", "/plans", json=_plan_body(
            sensitivity_job, max_drop, target_sparsity, metric=metric, higher_is_better=higher_is_better,
            epochs=epochs, one_shot=one_shot, objective=objective, budget=budget, target=target,
            interpolate=interpolate))

    def measure_plan(self, sensitivity_job: JobRef, *, objective: str | None = None, budget: float | None = None,
                     target: float | None = None, interpolate: int | None = None, metric: str | None = None,
                     higher_is_better: bool | None = None, epochs: int | None = None, one_shot: bool | None = None,
                     correct: bool | None = None, rounds: int | None = None, search: bool | None = None,
                     evaluations: int | None = None, baselines: bool | None = None,
                     experiment: int | Experiment | None = None, wait: bool = True) -> Job:
        """A plan job: the optimiser's plan measured as a whole on the sweep's model and data (``correct``:
        re-solved until the measured drop meets ``budget``; ``search``: improved by measured exchanges that
        keep ``target``, within ``evaluations``), beside the baselines measured the same way. Its
        ``result`` holds ``plan``, ``baselines`` and ``yaml``; :meth:`launch_plan` with ``plan_job`` prunes with
        it. Options left None take PlanMeasure's defaults."""
        body = {"sensitivity_job": _job_id(sensitivity_job), **_given(
            objective=objective, budget=budget, target=target, interpolate=interpolate, metric=metric,
            higher_is_better=higher_is_better, epochs=epochs, one_shot=one_shot, correct=correct, rounds=rounds,
            search=search, evaluations=evaluations, baselines=baselines, experiment_id=_experiment_id(experiment))}
        job = self._job(self._json("POST", "/plans/measure", json=body))
        return self.wait(job) if wait else job

    def launch_plan(self, sensitivity_job: JobRef, max_drop: float | None = None, *,
                    target_sparsity: float | None = None, metric: str | None = None,
                    higher_is_better: bool | None = None, epochs: int | None = None,
                    one_shot: bool | None = None, objective: str | None = None, budget: float | None = None,
                    target: float | None = None, interpolate: int | None = None, plan_job: JobRef | None = None,
                    lr: float | None = None, thin: bool | None = None,
                    register_as: str | None = None, experiment: int | Experiment | None = None,
                    wait: bool = True) -> Job:
        """Plan (the rule, the optimiser with ``objective``, or a measured ``plan_job``'s schedule), then prune
        the sensitivity job's model on its dataset with that schedule (a prune job); ``thin`` also removes the
        pruned structures and measures size and latency before and after. Options left None take PlanLaunch's
        defaults."""
        body = _plan_body(sensitivity_job, max_drop, target_sparsity, metric=metric,
                          higher_is_better=higher_is_better, epochs=epochs,
                          one_shot=one_shot, objective=objective, budget=budget, target=target,
                          interpolate=interpolate, plan_job=None if plan_job is None else _job_id(plan_job),
                          lr=lr, thin=thin, register_as=register_as, experiment_id=_experiment_id(experiment))
        job = self._job(self._json("POST", "/plans/launch", json=body))
        return self.wait(job) if wait else job

    # -- exports to experiment trackers (issue 18) --------------------------------------------------

    def export_mlflow(self, job: JobRef, tracking_uri: str, experiment: str | None = None, *,
                      artifact_location: str | None = None, on_server: bool = False) -> dict[str, str]:
        """Log a job as one MLflow run at ``tracking_uri``: the spec as params, the points as metrics (sparsity
        in per-mille as the step) and as a table, the curves' figure, epochs, the CSV, the spec's YAML, the HTML
        report and the job's files; tags link the run back to this server's job. Exported from this process
        (needs ``prunescope[mlflow]`` here), or by the server with ``on_server`` (an http(s) tracker, or the
        server's own ``PRUNESCOPE_MLFLOW_TRACKING_URI``). Returns ``{run_id, experiment_id, tracking_uri}``."""
        if on_server:
            return self._json("POST", f"/jobs/{_job_id(job)}/export/mlflow",
                              json=_given(tracking_uri=tracking_uri or None, experiment=experiment))
        from api.export.content import from_client
        from api.export.mlflow import export_mlflow

        return export_mlflow(from_client(self, _job_id(job)), tracking_uri, experiment,
                             artifact_location=artifact_location)

    def export_tensorboard(self, job: JobRef, directory: str | os.PathLike) -> dict[str, Any]:
        """Write a job as TensorBoard event files under ``directory/prunescope-<kind>-<id>``: the same scalars
        as :meth:`export_mlflow`, the spec and CSV as text, the figure as an image where kaleido is installed.
        Returns ``{logdir, image}``."""
        from api.export.content import from_client
        from api.export.tensorboard import export_tensorboard

        return export_tensorboard(from_client(self, _job_id(job)), directory)


def _given(**fields: Any) -> dict[str, Any]:
    """The fields a caller gave: one left None is left out, and the server's model gives its default."""
    return {k: v for k, v in fields.items() if v is not None}


def _point_json(row: Mapping[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    """A point as the import route takes it: its known fields, plain Python values, unknowns (None, NaN) left out."""
    out = {}
    for key in fields:
        value = _plain(row.get(key))
        if isinstance(value, Mapping):  # metrics: each value plain too, the missing ones left out
            value = {str(k): _plain(v) for k, v in value.items() if _known(_plain(v))} or None
        if _known(value):
            out[key] = value
    return out


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value  # numpy scalars from a DataFrame


def _known(value: Any) -> bool:
    try:
        return value is not None and bool(value == value)  # NaN != NaN: a DataFrame's missing value
    except TypeError:  # pandas.NA cannot be a bool: missing too
        return False


def _plan_body(job: JobRef, max_drop: float | None, target_sparsity: float | None, **fields: Any) -> dict[str, Any]:
    """``POST /plans``'s fields (the server checks that exactly one goal is given)."""
    return {"sensitivity_job": _job_id(job), **_given(max_drop=max_drop, target_sparsity=target_sparsity, **fields)}


def _raise_for_status(response: httpx.Response) -> None:
    """An error status becomes a PrunescopeError with the API's ``detail`` (and 422's ``errors``)."""
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        message = detail if isinstance(detail, str) else json.dumps(detail)
        raise PrunescopeError(response.status_code, message, body.get("errors"))
    raise PrunescopeError(response.status_code, response.text.strip() or response.reason_phrase)


def _parse_sse(lines: Iterator[str]) -> Iterator[Event]:
    event, data = "message", []
    for line in lines:
        if not line:
            if data:
                yield Event(event, json.loads("\n".join(data)))
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
    if data:
        yield Event(event, json.loads("\n".join(data)))


def _checkpoint_bytes(source: CheckpointSource, stem: str) -> tuple[bytes, str]:
    """(bytes, file name) of a checkpoint path, raw bytes, or an nn.Module's state_dict (torch imported here only)."""
    if isinstance(source, bytes | bytearray):
        return bytes(source), f"{stem}.pt"
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        return path.read_bytes(), path.name
    if not callable(getattr(source, "state_dict", None)):
        raise TypeError(f"a checkpoint is a path, bytes or an nn.Module, not {type(source).__name__}")
    import torch

    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in source.state_dict().items()}, buffer)
    return buffer.getvalue(), f"{stem}.pt"
