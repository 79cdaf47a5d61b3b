"""First-start demo: train digits-cnn, then run a sensitivity job on it, so a newcomer sees results
within a minute. Idempotent and resumable: jobs live in the ``demo`` experiment; a start finds what
is already there (a finished demo is never redone, an interrupted one continues)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.schemas import SensitivitySpec, TrainSpec
from api.shared.dispatch import Dispatcher, dispatch_job
from api.store import repo
from api.store.models import TERMINAL_STATUSES, Experiment, Job
from api.version import code_version

log = logging.getLogger(__name__)
#: The trained demo model's registry name: its own, never the architecture's (a registered name must not
#: shadow ``digits-cnn``, which keeps meaning fresh weights).
DEMO_MODEL = "digits-cnn-demo"
# 10 epochs of SGD at batch 128 reach ~99 % test top1 on digits (15 at batch 64 is slower and no better);
# about 10 s on one CPU thread.
# The specs are built by the API's models, so everything not named here is their default.
DEMO_TRAIN = TrainSpec(model="digits-cnn", dataset="digits", batch_size=128, epochs=10,
                       register_as=DEMO_MODEL).model_dump(mode="json")
# Distiller's default sweep (0, 0.05, ..., 0.9) over every conv/linear weight: 4 x 19 points, ~2 s.
DEMO_SENSE = SensitivitySpec(model=DEMO_MODEL, model_kind="registered", dataset="digits",
                             shards=2).model_dump(mode="json")


def _submit(session: Session, dispatcher: Dispatcher, kind: str, spec: dict, exp: int, shards: int = 1) -> int:
    job = repo.create_job(session, kind=kind, spec=spec, shards=shards, experiment_id=exp,
                          code_version=code_version())
    session.commit()
    dispatch_job(dispatcher, job.id, shards)
    return job.id


def _demo_job(session: Session, exp_id: int, kind: str) -> Job | None:
    return session.scalar(select(Job).where(Job.experiment_id == exp_id, Job.kind == kind).order_by(Job.id.desc()))


def _wait(factory: sessionmaker[Session], job_id: int, poll_s: float = 0.5) -> str | None:
    while True:
        with factory() as s:
            status = s.scalar(select(Job.status).where(Job.id == job_id))
        if status in TERMINAL_STATUSES or status is None:
            return status
        time.sleep(poll_s)


def run_demo(factory: sessionmaker[Session], dispatcher: Dispatcher, say: Callable[[str], None] = print,
             base_url: str = "") -> int | None:
    """Train (unless done), then submit the sensitivity job (unless submitted); its id, or None."""
    with factory() as s:
        exp = s.scalar(select(Experiment).where(Experiment.name == "demo"))
        if exp is None:
            exp = Experiment(name="demo", description="digits-cnn trained on first start, then its sensitivity",
                             tags=["demo"])
            s.add(exp)
            s.commit()
        sense = _demo_job(s, exp.id, "sensitivity")
        if sense is not None:
            say(f"demo: done at an earlier start: sensitivity job {sense.id} ({sense.status}), "
                f"{base_url}/#/jobs/{sense.id}")
            return sense.id
        train = _demo_job(s, exp.id, "train")
        if train is None or train.status in ("failed", "cancelled"):
            train_id = _submit(s, dispatcher, "train", DEMO_TRAIN, exp.id)
        else:
            train_id = train.id  # running (resumed by the restart's re-dispatch) or already done
        exp_id = exp.id
    say(f"demo: training digits-cnn as job {train_id}, then its sensitivity analysis (about a minute)")
    status = _wait(factory, train_id)
    if status != "succeeded":
        say(f"demo: training job {train_id} ended {status}; no demo sensitivity job")
        return None
    with factory() as s:
        sense_id = _submit(s, dispatcher, "sensitivity", DEMO_SENSE, exp_id, shards=DEMO_SENSE["shards"])
    say(f"demo: sensitivity job {sense_id} submitted: {base_url}/#/jobs/{sense_id} "
        f"(points: {base_url}/api/v1/jobs/{sense_id}/points.csv)")
    return sense_id


def start_demo(factory: sessionmaker[Session], dispatcher: Dispatcher, base_url: str = "") -> threading.Thread:
    """Run the demo chain in a daemon thread (the server starts answering at once)."""

    def target() -> None:
        try:
            run_demo(factory, dispatcher, say=lambda m: print(f"prunescope {m}", flush=True), base_url=base_url)
        except Exception:  # noqa: BLE001 - the demo must never take the server down
            log.exception("demo failed")

    thread = threading.Thread(target=target, name="prunescope-demo", daemon=True)
    thread.start()
    return thread
