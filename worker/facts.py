"""Facts that need torch, written to SQL by whoever has it, so the torch-free API can preview and plan.

A model's parameter shapes and prunable names are known only by building it. Workers publish those of
prunescope's own architectures when they start (``prunescope worker``; the embedded executor runs
``python -m worker.facts`` so the API process itself never imports torch), runners publish those of
any architecture they build fresh, and registered models store their own (see :mod:`worker.runners`).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from api.store import repo
from pruning_core.names import MODEL_NAMES, architecture

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]


def describe(model: Any) -> tuple[list[list[Any]], list[str]]:
    """``([[name, [dims...]], ...], prunable names)`` of a built model: what the API previews and plans on."""
    from pruning_core.metrics import prunable_parameters

    shapes = repo.shapes_json({n: tuple(p.shape) for n, p in model.named_parameters()})
    return shapes, [n for n, _ in prunable_parameters(model)]


def _torch_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch")
    except PackageNotFoundError:
        return None


def publisher_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def publish_built(session: Session, arch: str, model: Any, *, input_shape: Iterable[int] | None = None,
                  published_by: str | None = None) -> bool:
    """Publish ``model``'s facts as architecture ``arch``'s if it is the architecture as the catalogue
    declares it (built for the catalogue's input shape); False (nothing written) otherwise."""
    entry = architecture(arch)
    if entry is None or (input_shape is not None and tuple(input_shape) != entry.input_shape):
        return False
    shapes, prunable = describe(model)
    repo.publish_architecture(session, entry.name, shapes={n: d for n, d in shapes}, prunable=prunable,
                              input_shape=entry.input_shape, num_classes=entry.num_classes,
                              torch_version=_torch_version(), published_by=published_by or publisher_name())
    return True


def publish_from_runner(factory: sessionmaker[Session], arch: str, checkpoint: str | None, model: Any,
                        input_shape: Iterable[int] | None) -> None:
    """What a runner calls after building its model: a fresh architecture (no checkpoint, which may be
    thinned) whose facts are not stored yet is published. Never fails the job."""
    if checkpoint is not None:
        return
    try:
        with factory() as s:
            entry = architecture(arch)
            if entry is None or repo.architecture_facts(s, entry.name) is not None:
                return
            if publish_built(s, arch, model, input_shape=input_shape):
                s.commit()
    except Exception:  # noqa: BLE001 - a missing fact only costs the API a slower answer
        log.warning("could not publish the parameter facts of %s", arch, exc_info=True)


def publish_architectures(factory: sessionmaker[Session], names: Iterable[str] = MODEL_NAMES) -> list[str]:
    """Build each architecture once and publish its facts; architectures already published with this
    torch version are skipped. Returns the names published.

    Built on the meta device without a seed: only names and shapes are wanted, and this runs beside the
    runners, so it must neither allocate weights nor touch the process-wide random generator."""
    import torch

    from pruning_core.models import create_model

    done = []
    for name in missing_architectures(factory, names):
        with torch.device("meta"):
            model = create_model(name, seed=None)
        with factory() as s:
            publish_built(s, name, model)
            s.commit()
        done.append(name)
    return done


def publish_in_background(factory: sessionmaker[Session]) -> threading.Thread:
    """:func:`publish_architectures` in a daemon thread (for a process that has torch), so a worker's
    start is not delayed by building six models."""
    def run() -> None:
        try:
            published = publish_architectures(factory)
            log.info("published the parameter facts of %s", ", ".join(published) or "nothing new")
        except Exception:  # noqa: BLE001 - the API falls back to its 409 / helper pool
            log.warning("could not publish architecture facts", exc_info=True)

    thread = threading.Thread(target=run, name="publish-facts", daemon=True)
    thread.start()
    return thread


def missing_architectures(factory: sessionmaker[Session], names: Iterable[str] = MODEL_NAMES) -> list[str]:
    """The architectures whose facts are not published with the installed torch version (torch-free)."""
    version = _torch_version()
    with factory() as s:
        known = repo.published_architectures(s)
    return [n for n in names if known.get(n, "") != version]


def publish_in_child(factory: sessionmaker[Session], db_url: str) -> threading.Thread:
    """:func:`publish_architectures` in a ``python -m worker.facts`` process, waited for by a daemon
    thread: for the embedded server, whose own process must not import torch (only its jobs do). No
    process is started when every architecture is published already."""
    def run() -> None:
        try:
            if not missing_architectures(factory):
                return
        except Exception:  # noqa: BLE001 - the store is checked again by the child
            log.warning("could not read the published architecture facts", exc_info=True)
        env = {**os.environ, "PRUNESCOPE_DATABASE_URL": db_url, "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
        try:
            proc = subprocess.run([sys.executable, "-m", "worker.facts"], env=env, cwd=ROOT, capture_output=True,
                                  text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("could not publish architecture facts: %s", exc)
            return
        if proc.returncode != 0:
            log.warning("publishing architecture facts failed:\n%s", proc.stderr[-2000:])

    thread = threading.Thread(target=run, name="publish-facts", daemon=True)
    thread.start()
    return thread


def main() -> int:
    """Publish prunescope's own architectures into ``PRUNESCOPE_DATABASE_URL`` (the store is migrated)."""
    from api.shared.settings import get_settings
    from api.store import make_engine, make_session_factory

    engine = make_engine(get_settings().db_url)
    try:
        publish_architectures(make_session_factory(engine))
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
