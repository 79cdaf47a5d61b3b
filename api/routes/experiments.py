"""Experiments group jobs under a name with tags and a description."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from sqlalchemy import func, select

from api.deps import IdPath, SessionDep, get_or_404
from api.schemas import ExperimentCreate, ExperimentOut
from api.store.models import Experiment, Job

router = APIRouter(prefix="/experiments", tags=["experiments"])


def _out(session: SessionDep, exp: Experiment) -> ExperimentOut:
    out = ExperimentOut.model_validate(exp)
    out.jobs = session.scalar(select(func.count()).where(Job.experiment_id == exp.id)) or 0
    return out


@router.post("", status_code=201, response_model=ExperimentOut)
def create_experiment(body: ExperimentCreate, session: SessionDep) -> ExperimentOut:
    if session.scalar(select(Experiment.id).where(Experiment.name == body.name)) is not None:
        raise HTTPException(409, f"name: an experiment named {body.name!r} already exists")
    exp = Experiment(name=body.name, description=body.description, tags=body.tags)
    session.add(exp)
    session.commit()
    return _out(session, exp)


@router.get("", response_model=list[ExperimentOut])
def list_experiments(
    session: SessionDep, tag: Annotated[str | None, Query(max_length=100)] = None
) -> list[ExperimentOut]:
    rows = session.scalars(select(Experiment).order_by(Experiment.id)).all()
    return [_out(session, e) for e in rows if tag is None or tag in (e.tags or [])]


@router.get("/{experiment_id}", response_model=ExperimentOut)
def get_experiment(experiment_id: IdPath, session: SessionDep) -> ExperimentOut:
    return _out(session, get_or_404(session, Experiment, experiment_id, "experiment"))
