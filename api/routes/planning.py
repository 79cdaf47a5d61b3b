"""Schedule validation, plans (sensitivity + tolerance -> YAML, launched as a prune job), comparison.

Everything is answered in this process, torch-free: validation and tolerance plans need nothing else;
previews and plans for a target sparsity need the model's parameter shapes, which SQL holds for every
registered model (stored at registration) and every architecture a worker published. Only where the
shapes are unknown and torch is installed here does the bounded helper pool (api.compute) build the
model; without torch that is a 409 saying how to get the shapes. A route commits its session before it
waits for the pool, so waiting requests hold no SQL connection."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy import select

from api.compute import run_helper
from api.deps import DispatcherDep, SessionDep, SettingsDep, get_or_404
from api.jobs import finished_sensitivity, named_sweep, submit_job, unknown_model
from api.schemas import (
    DATA_FIELDS,
    JobOut,
    PlanGoal,
    PlanJobCreate,
    PlanLaunch,
    PlanMeasure,
    PlanRequest,
    PlanSpec,
    PruneJobCreate,
    PruneSpec,
    ScheduleCheck,
    SchedulePreview,
    SchedulePreviewRequest,
    ScheduleResult,
    known_architecture,
)
from api.shared.settings import Settings
from api.shared.specs import PLAN_SWEEP_FIELDS
from api.store import repo
from api.store.models import POINT_ORDER, Job, ModelEntry, SensitivityPointRow
from api.store.repo import ParameterFacts
from pruning_core.plan import damage_unit, plan_answer, plan_schedule, planned_sizes, sizes_from_shapes
from pruning_core.plan.compare import as_json, predicted_baselines
from pruning_core.points import COLUMN_METRICS, METRIC_NAME_PATTERN, metric_names, metric_value
from pruning_core.preview import preview
from pruning_core.schedule import ScheduleError, check_schedule, dump_schedule, parse_schedule, resolve_names

router = APIRouter(tags=["planning"])


@router.post("/schedules/validate", response_model=ScheduleResult)
def validate_schedule(body: ScheduleCheck) -> dict[str, Any]:
    """Always 200 with ``valid`` true/false: an invalid schedule is the answer, not a bad request."""
    return check_schedule(body.yaml)


def preview_on_facts(yaml_text: str, facts: ParameterFacts, *, lr: float, epochs: int | None) -> dict[str, Any]:
    """The helper's ``preview_schedule`` answer computed from stored shapes: ``renames`` and ``epochs``, or
    ``error``. Threshold pruners get None with a note (the pool, which builds fresh weights, measures them)."""
    try:
        schedule = parse_schedule(yaml_text, source="yaml")
        walked = preview(schedule, facts.shapes, lr=lr, epochs=epochs, prunable=facts.prunable)
        renames = resolve_names(schedule, list(facts.shapes), facts.prunable)[0].renames
    except ScheduleError as exc:
        return {"error": str(exc)}
    return {"renames": [list(pair) for pair in renames], "epochs": walked}


def _torch_here() -> bool:
    """Whether this environment could build a model in the helper pool (the slim API image cannot)."""
    return importlib.util.find_spec("torch") is not None


def _stored_facts(session: SessionDep, name: str) -> tuple[ParameterFacts | None, bool]:
    """The stored parameter facts of ``name`` (a registered model's, else its architecture's) and whether
    ``name`` is a registered model."""
    registered = session.scalar(select(ModelEntry.architecture).where(ModelEntry.name == name)) is not None
    facts = repo.model_facts(session, name) if registered else \
        repo.architecture_facts(session, known_architecture(name) or name)
    return facts, registered


def _facts_or_pool(session: SessionDep, name: str, field: str) -> ParameterFacts | None:
    """The stored parameter facts of ``name``; None where the pool can build the model instead; a 409 that
    says how to get them where it cannot."""
    facts, registered = _stored_facts(session, name)
    if facts is not None or _torch_here():
        return facts
    if registered:
        raise HTTPException(409, f"{field}: registered model {name!r} has no stored parameter shapes (it was "
                                 "registered before they were recorded) and torch is not installed in the API's "
                                 "environment to read them: register it again (upload its checkpoint)")
    arch = known_architecture(name) or name
    raise HTTPException(409, f"{field}: no worker has published the shapes of {arch} yet (torch is not installed in "
                             f"the API's environment to build it): start `prunescope worker`, or register a model "
                             f"of it")


@router.post("/schedules/preview", response_model=SchedulePreview)
def preview_schedule(body: SchedulePreviewRequest, session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    """Walk a schedule without training: per epoch the lr, each parameter's target sparsity, thinning."""
    model = _model_ref(session, settings, {"model": body.model})
    facts = _facts_or_pool(session, body.model, "model")
    session.commit()  # hand the connection back to the pool before computing (or waiting for a helper)
    if facts is not None:  # torch-free, in this process
        out = preview_on_facts(body.yaml, facts, lr=body.lr, epochs=body.epochs)
    else:
        out = run_helper("preview_schedule", {"yaml": body.yaml, "model": model, "epochs": body.epochs,
                                              "lr": body.lr})
    if "error" in out:
        raise HTTPException(422, out["error"] if out["error"].startswith("model:") else f"yaml: {out['error']}")
    return out


def _model_ref(session: SessionDep, settings: Settings, spec: dict[str, Any]) -> dict[str, Any]:
    """Architecture and checkpoint path of a job's model, for the helper to build it; an unknown name is
    refused here, before any helper is asked."""
    arch, checkpoint = repo.model_source(session, spec["model"], settings.data_dir, spec.get("model_kind"))
    if checkpoint is None and known_architecture(arch) is None:
        raise HTTPException(422, f"model: {unknown_model(spec['model'])}")
    return {"arch": arch, "checkpoint": checkpoint}


def _plan(session: SessionDep, settings: Settings, body: PlanRequest) -> dict[str, Any]:
    """The helper's plan: ``yaml``, ``levels``, ``tolerance``, ``overall_sparsity`` and what was measured. A
    metric the job's points do not have is a 422 that names those they have."""
    job = finished_sensitivity(session, body.sensitivity_job, "sensitivity_job")
    payload = {"points": repo.point_rows(session, body.sensitivity_job), "max_drop": body.max_drop,
               "metric": body.metric,
               "higher_is_better": body.higher_is_better, "epochs": body.epochs, "one_shot": body.one_shot,
               "target_sparsity": body.target_sparsity}
    _require_metric(payload["points"], body.metric, f"job {body.sensitivity_job}'s points")
    if body.objective is not None:  # the optimiser and the torch-free baselines, predicted, in this process
        facts = _stored_facts(session, job.spec["model"])[0]  # without them: the dense points' nnz
        session.commit()
        points = [SimpleNamespace(**p) for p in payload["points"]]
        sizes = planned_sizes(facts.shapes, facts.prunable, points) if facts is not None else None
        out = optimised_answer(points, body, sizes)
        if "error" in out:
            raise HTTPException(422, f"{'budget' if body.budget is not None else 'target'}: {out['error']}")
        return out
    if body.target_sparsity is None:  # torch-free: answered here, in the API's own process
        points = [SimpleNamespace(**p) for p in payload["points"]]
        out = plan_answer(points, max_drop=body.max_drop, metric=body.metric, epochs=body.epochs,
                          one_shot=body.one_shot, higher_is_better=body.higher_is_better)
    else:  # the overall sparsity weighs parameters by size: stored shapes, else by building the model
        payload["model"] = _model_ref(session, settings, job.spec)
        facts = _facts_or_pool(session, job.spec["model"], "target_sparsity")
        session.commit()  # hand the connection back to the pool before computing (or waiting for a helper)
        if facts is not None:
            points = [SimpleNamespace(**p) for p in payload["points"]]
            out = plan_answer(points, max_drop=body.max_drop, target_sparsity=body.target_sparsity,
                              metric=body.metric, epochs=body.epochs, one_shot=body.one_shot,
                              higher_is_better=body.higher_is_better,
                              sizes=sizes_from_shapes(facts.shapes, facts.prunable))
        else:
            out = run_helper("make_plan", payload)
    if "error" in out:
        raise HTTPException(422, f"{'max_drop' if body.target_sparsity is None else 'target_sparsity'}: "
                                 f"{out['error']}")
    return out


def optimised_answer(points: list[Any], body: PlanGoal, sizes: dict[str, int] | None) -> dict[str, Any]:
    """POST /plans with an objective: the optimiser's ``plan`` (levels, predicted drop, gain, bound and gap),
    its schedule's ``yaml``, and the ``baselines`` that need no weights at the same goal; or ``error``."""
    goal = body.goal()
    try:
        chosen = goal.solve(points, sizes)
        yaml_text = dump_schedule(plan_schedule(chosen, epochs=body.epochs, one_shot=body.one_shot))
    except ValueError as exc:
        return {"error": str(exc)}
    return {"yaml": yaml_text, "levels": chosen.levels, "tolerance": chosen.tolerance,
            "overall_sparsity": chosen.overall_sparsity, "metric": chosen.metric,
            "higher_is_better": chosen.higher_is_better, "unit": damage_unit(chosen.metric, chosen.higher_is_better),
            "objective": goal.objective, "plan": chosen.to_dict(),
            "baselines": {k: as_json(v) for k, v in predicted_baselines(points, goal, sizes).items()}}


def _require_metric(points: list[dict[str, Any]], metric: str, whose: str) -> None:
    """A 422 naming the metrics ``points`` have when ``metric`` is not one of them (none: nothing to say yet)."""
    have = metric_names(points)
    if have and metric not in have:
        raise HTTPException(422, f"metric: {whose} have no {metric!r}; they have: {', '.join(have)}")


@router.post("/plans")
def make_plan(body: PlanRequest, session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    """``yaml`` (the schedule), ``levels`` per parameter, the ``tolerance`` used and ``overall_sparsity``
    (known with ``target_sparsity``)."""
    return _plan(session, settings, body)


def _plan_job_yaml(session: SessionDep, body: PlanLaunch) -> tuple[str, int]:
    """The schedule a succeeded plan job of this sweep chose and the epochs it was written for (422/409 saying
    what is wrong otherwise)."""
    finished_sensitivity(session, body.sensitivity_job, "sensitivity_job")
    job = session.get(Job, body.plan_job)
    if job is None or job.kind != "plan":
        raise HTTPException(422, f"plan_job: job {body.plan_job} is not a plan job")
    if job.spec.get("sensitivity_job") != body.sensitivity_job:
        raise HTTPException(422, f"plan_job: job {body.plan_job} plans sweep {job.spec.get('sensitivity_job')}, "
                                 f"not {body.sensitivity_job}")
    if job.status != "succeeded" or not (job.result or {}).get("yaml"):
        raise HTTPException(409, f"plan_job: job {body.plan_job} is {job.status}; launch a succeeded plan job")
    return job.result["yaml"], int(job.spec["epochs"])


@router.post("/plans/launch", status_code=201, response_model=JobOut)
def launch_plan(body: PlanLaunch, session: SessionDep, settings: SettingsDep, dispatcher: DispatcherDep) -> Job:
    """Plan, then run the schedule as a prune job on the sensitivity job's model and dataset."""
    source = get_or_404(session, Job, body.sensitivity_job, "job")
    epochs = body.epochs
    if body.plan_job is not None:  # the schedule was written for the plan job's epochs
        yaml_text, epochs = _plan_job_yaml(session, body)
    else:
        yaml_text = _plan(session, settings, body)["yaml"]
    spec = {k: v for k, v in source.spec.items() if k in DATA_FIELDS}
    spec.update(schedule=yaml_text, epochs=epochs, lr=body.lr, thin=body.thin, register_as=body.register_as)
    job_body = PruneJobCreate(kind="prune", spec=PruneSpec(**spec), experiment_id=body.experiment_id or
                              source.experiment_id)
    job = submit_job(session, settings, dispatcher, job_body)
    # lineage: the sweep and the plan request this prune job came from (the jobs list links them)
    plan = body.model_dump(include=set(PlanRequest.model_fields) - {"sensitivity_job"})
    repo.merge_result(session, job.id, {"lineage": {"sensitivity_job": source.id, "plan": plan,
                                                    **({"plan_job": body.plan_job} if body.plan_job else {})}})
    session.commit()
    session.refresh(job)
    return job


@router.post("/plans/measure", status_code=201, response_model=JobOut)
def measure_plan(body: PlanMeasure, session: SessionDep, settings: SettingsDep, dispatcher: DispatcherDep) -> Job:
    """A plan job: the optimiser's plan for the sweep, measured as a whole on the sweep's model and data (and,
    with ``correct``, re-solved until the measured drop meets the budget), beside the baselines at the same
    goal. Its result holds ``plan``, ``baselines`` and ``yaml``; ``POST /plans/launch`` with ``plan_job``
    prunes with that schedule."""
    source = finished_sensitivity(session, body.sensitivity_job, "sensitivity_job")
    spec = {k: v for k, v in source.spec.items() if k in DATA_FIELDS | PLAN_SWEEP_FIELDS}
    spec.update(body.model_dump(exclude={"experiment_id"}))
    try:
        plan_spec = PlanSpec(**spec)
    except ValidationError as exc:  # answered as any request body's errors are
        raise RequestValidationError(exc.errors()) from None
    job = submit_job(session, settings, dispatcher, PlanJobCreate(
        kind="plan", spec=plan_spec, experiment_id=body.experiment_id or source.experiment_id))
    repo.merge_result(session, job.id, {"lineage": {"sensitivity_job": source.id}})
    session.commit()
    session.refresh(job)
    return job


@router.get("/compare")
def compare(
    session: SessionDep,
    jobs: Annotated[list[int], Query(min_length=2, max_length=20, description="two or more sensitivity jobs")],
    metric: Annotated[str, Query(pattern=METRIC_NAME_PATTERN, description="any metric the jobs' points have "
                                 "(top1, top5, loss, perplexity, a custom one)")] = "top1",
) -> dict[str, Any]:
    """Side by side: for every (parameter, sparsity) the metric of each job (null where absent). A metric
    none of the jobs has is a 422 naming those they have."""
    if len(set(jobs)) != len(jobs):
        raise HTTPException(422, "jobs (query): a job is listed twice")
    for job_id in jobs:
        named_sweep(session, job_id, "jobs (query)", missing=404)
    # a column metric is read alone; any other is a key of the metrics JSON, read (as JSON) with it
    value = getattr(SensitivityPointRow, metric if metric in COLUMN_METRICS else "metrics")
    rows = session.execute(
        select(SensitivityPointRow.job_id, SensitivityPointRow.parameter, SensitivityPointRow.sparsity, value)
        .where(SensitivityPointRow.job_id.in_(jobs))
        .order_by(*POINT_ORDER)
    ).all()
    table: dict[tuple[str, float], dict[str, Any]] = {}
    found = False
    for job_id, parameter, sparsity, stored in rows:
        entry = table.setdefault((parameter, sparsity), {"parameter": parameter, "sparsity": sparsity,
                                                         "values": {str(j): None for j in jobs}})
        got = metric_value({metric: stored} if metric in COLUMN_METRICS else {"metrics": stored}, metric)
        entry["values"][str(job_id)] = got
        found = found or got is not None
    if rows and not found:
        _require_metric(_metric_rows(session, jobs), metric, "the jobs' points")
    return {"jobs": jobs, "metric": metric, "rows": list(table.values())}


def _metric_rows(session: SessionDep, jobs: list[int]) -> list[dict[str, Any]]:
    """The metric columns of the jobs' points: what :func:`metric_names` reads."""
    p = SensitivityPointRow
    return [dict(r._mapping) for r in session.execute(
        select(p.top1, p.top5, p.loss, p.metrics).where(p.job_id.in_(jobs)))]
