"""First-start demo: train digits-cnn in the executor, then run a sensitivity job on it, so a newcomer
sees results at once. Idempotent: the ``demo`` experiment marks it as done."""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.dispatch import Dispatcher, dispatch_job
from api.store import repo
from api.store.models import TERMINAL_STATUSES, Experiment, Job
from api.version import code_version

log = logging.getLogger(__name__)
DEMO_MODEL = "digits-cnn"
DEMO_TRAIN = {"model": "digits-cnn", "dataset": "digits", "dataset_options": {}, "batch_size": 64,
              "device": "auto", "epochs": 15, "lr": 0.1, "optimizer": "sgd", "seed": 0, "register_as": DEMO_MODEL}
DEMO_SENSE = {"model": DEMO_MODEL, "dataset": "digits", "dataset_options": {}, "batch_size": 256, "device": "auto",
              "split": "test", "group": "element", "levels": [round(i * 0.1, 10) for i in range(10)],
              "params": None, "samples": None, "coupled": False, "engine": "fast", "shards": 2}


def _submit(session: Session, dispatcher: Dispatcher, kind: str, spec: dict, exp: int, shards: int = 1) -> int:
    job = repo.create_job(session, kind=kind, spec=spec, shards=shards, experiment_id=exp,
                          code_version=code_version())
    session.commit()
    dispatch_job(dispatcher, job.id, shards)
    return job.id


def _run_demo(factory: sessionmaker[Session], dispatcher: Dispatcher) -> None:
    with factory() as s:
        exp = s.scalar(select(Experiment).where(Experiment.name == "demo"))
        if exp is not None:
            return
        exp = Experiment(name="demo", description="digits-cnn trained on first start, then its sensitivity",
                         tags=["demo"])
        s.add(exp)
        s.commit()
        train_id = _submit(s, dispatcher, "train", DEMO_TRAIN, exp.id)
    while True:
        with factory() as s:
            status = s.scalar(select(Job.status).where(Job.id == train_id))
        if status in TERMINAL_STATUSES or status is None:
            break
        time.sleep(1)
    if status != "succeeded":
        log.warning("demo: training job %s ended %s; no demo sensitivity job", train_id, status)
        return
    with factory() as s:
        _submit(s, dispatcher, "sensitivity", DEMO_SENSE, exp.id, shards=DEMO_SENSE["shards"])


def start_demo(factory: sessionmaker[Session], dispatcher: Dispatcher) -> None:
    """Run the demo chain in a daemon thread (the server starts answering at once)."""
    threading.Thread(target=_run_demo, args=(factory, dispatcher), name="prunescope-demo", daemon=True).start()
