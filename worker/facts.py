"""Facts that need torch, written to SQL by whoever has it, so the torch-free API can preview and plan.

A model's parameter shapes and prunable names are known only by building it. Workers publish those of
prunescope's own architectures (and the installed plugins') when they start (``prunescope worker``; the
embedded executor runs ``python -m worker.facts`` so the API process itself never imports torch), runners
publish those of any architecture they build fresh, and registered models store their own (see
:mod:`worker.runners`).

Workers also publish what they can build beyond the built-in catalogue (:class:`CapabilityPublisher`, table
``worker_capabilities``): devices, torch and timm versions, plugin architectures and timm names, refreshed
every ``heartbeat_stale_s / 3``, so the API (which may have neither the plugins nor timm) accepts exactly
the architectures some live worker can build.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from importlib.metadata import PackageNotFoundError, entry_points, version
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from api.store import repo
from api.store.models import ArchitectureFacts
from pruning_core.names import DATASET_PLUGIN_GROUP, MODEL_NAMES, PLUGIN_GROUP, architecture, plugin_models

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]


def describe(model: Any) -> tuple[list[list[Any]], list[str]]:
    """``([[name, [dims...]], ...], prunable names)`` of a built model: what the API previews and plans on."""
    from pruning_core.metrics import prunable_parameters

    shapes = repo.shapes_json({n: tuple(p.shape) for n, p in model.named_parameters()})
    return shapes, [n for n, _ in prunable_parameters(model)]


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _torch_version() -> str | None:
    return _version("torch")


def publisher_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def publish_built(session: Session, arch: str, model: Any, *, input_shape: Iterable[int] | None = None,
                  published_by: str | None = None) -> bool:
    """Publish ``model``'s facts as architecture ``arch``'s if it is the architecture as the catalogue
    declares it (built for the catalogue's input shape); False (nothing written) otherwise."""
    entry = _declared(arch)
    if entry is None or (input_shape is not None and tuple(input_shape) != tuple(entry.input_shape)):
        return False
    shapes, prunable = describe(model)
    repo.publish_architecture(session, entry.name, shapes={n: d for n, d in shapes}, prunable=prunable,
                              input_shape=entry.input_shape, num_classes=entry.num_classes,
                              torch_version=_torch_version(), published_by=published_by or publisher_name())
    return True


def _declared(arch: str) -> Any:
    """The catalogue's entry for ``arch``, else (plugin, timm) what this process's packages declare, or None.
    Only the worker side calls this for a non-catalogue name, where torch is imported already."""
    entry = architecture(arch)
    if entry is not None:
        return entry
    from pruning_core.models import model_info

    try:
        return model_info(arch)
    except (ValueError, TypeError, ImportError):
        return None


def publish_from_runner(factory: sessionmaker[Session], arch: str, checkpoint: str | None, model: Any,
                        input_shape: Iterable[int] | None) -> None:
    """What a runner calls after building its model: a fresh architecture (no checkpoint, which may be
    thinned) whose facts are not stored yet is published. Never fails the job."""
    if checkpoint is not None:
        return
    try:
        with factory() as s:
            entry = _declared(arch)
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
        try:
            with torch.device("meta"):
                model = create_model(name, seed=None)
        except Exception:  # noqa: BLE001 - an operator's factory may not build on "meta": its runner publishes
            if name in MODEL_NAMES:
                raise
            log.warning("could not build %s on the meta device to publish its facts", name, exc_info=True)
            continue
        with factory() as s:
            publish_built(s, name, model)
            s.commit()
        done.append(name)
    return done


def plugin_architecture_names() -> list[str]:
    """The installed plugin architectures' names, read from package metadata (torch-free, nothing imported)."""
    return plugin_models()


def missing_architectures(factory: sessionmaker[Session], names: Iterable[str] = MODEL_NAMES) -> list[str]:
    """The architectures whose facts are not published with the installed torch version (torch-free)."""
    version = _torch_version()
    with factory() as s:
        known = repo.published_architectures(s)
    return [n for n in names if known.get(n, "") != version]


# -- what this worker can build: worker_capabilities ----------------------------------------------

def fingerprint() -> str:
    """What decides a process's capabilities, hashed, torch-free: host, interpreter, torch and timm versions,
    the visible GPUs and the installed ``prunescope.models`` and ``prunescope.datasets`` entries (with their
    distributions' versions)."""
    plugins = sorted((group, ep.name, ep.value, ep.dist.version if ep.dist is not None else "")
                     for group in (PLUGIN_GROUP, DATASET_PLUGIN_GROUP) for ep in entry_points(group=group))
    facts = [socket.gethostname(), sys.executable, _version("torch"), _version("timm"),
             os.environ.get("CUDA_VISIBLE_DEVICES"), plugins]
    return hashlib.sha256(json.dumps(facts).encode()).hexdigest()


def capabilities() -> dict[str, Any]:
    """What this process can build (imports torch, the plugins and timm): the keyword arguments of
    :func:`api.store.repo.publish_capabilities`. GPUs are counted without initialising CUDA."""
    import torch

    from pruning_core.models import plugin_architectures, timm_models

    return {"fingerprint": fingerprint(),
            "devices": ["cpu", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))],
            "torch_version": _torch_version(), "timm_version": _version("timm"),
            "architectures": [info.as_json() for info in plugin_architectures()], "timm_models": timm_models(),
            "datasets": plugin_dataset_facts()}


def plugin_dataset_facts() -> list[dict[str, Any]]:
    """The installed ``prunescope.datasets`` entries as published: name and task (the factory's ``task``
    attribute, classification by default). The factories are imported, never called: loading is a job's."""
    from pruning_core.names import dataset_entry_points

    out = []
    for name, ep in sorted(dataset_entry_points().items()):
        try:
            task = getattr(ep.load(), "task", "classification")
        except Exception as exc:  # noqa: BLE001 - a broken plugin is not published, the rest are
            log.warning("dataset plugin %s cannot be imported: %s", name, exc)
            continue
        out.append({"name": name, "task": str(task)})
    return out


class CapabilityPublisher:
    """Publishes a worker's capabilities now and refreshes them every ``interval_s`` from a daemon thread, so
    the API counts the worker as live while it runs; :meth:`stop` withdraws them. ``compute`` returns the
    capabilities (it may be slow: importing torch, or a child process) and runs once, in the thread; a
    failure is retried at the next interval. ``then(capabilities)`` runs after the first publication (shape
    facts)."""

    def __init__(self, factory: sessionmaker[Session], worker: str, interval_s: float,
                 compute: Callable[[], dict[str, Any] | None], *, stale_s: float,
                 then: Callable[[dict[str, Any]], object] | None = None) -> None:
        self.factory, self.worker, self.interval_s, self.stale_s = factory, worker, interval_s, stale_s
        self._compute, self._then = compute, then
        self.capabilities: dict[str, Any] | None = None
        self.published = threading.Event()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="publish-capabilities", daemon=True)
        self.thread.start()

    def _publish(self) -> None:
        assert self.capabilities is not None
        with self.factory() as s:
            repo.publish_capabilities(s, self.worker, **self.capabilities)
            repo.forget_stale_capabilities(s, stale_s=max(self.stale_s, 24 * 3600.0), keep=self.worker)
            s.commit()

    def _step(self) -> None:
        if self.capabilities is None:
            self.capabilities = self._compute()
            if self.capabilities is None:
                return
            self._publish()
            log.info("published what %s can build: %d plugin and %d timm architectures on %s", self.worker,
                     len(self.capabilities["architectures"]), len(self.capabilities["timm_models"]),
                     ", ".join(self.capabilities["devices"]))
            self.published.set()
            if self._then is not None:
                self._then(self.capabilities)
            return
        with self.factory() as s:
            refreshed = repo.refresh_capabilities(s, self.worker)
            s.commit()
        if not refreshed:  # deleted meanwhile (a store reset, a peer's cleanup): publish again
            self._publish()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception:  # noqa: BLE001 - the store may be down a moment; try again at the next tick
                log.warning("could not publish the capabilities of %s", self.worker, exc_info=True)
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        """Stop refreshing and withdraw the capabilities (the API then stops counting this worker at once)."""
        self._stop.set()
        self.thread.join(timeout=2)
        try:
            with self.factory() as s:
                repo.withdraw_capabilities(s, self.worker)
                s.commit()
        except Exception:  # noqa: BLE001 - a row left behind goes stale on its own
            log.warning("could not withdraw the capabilities of %s", self.worker, exc_info=True)


def refresh_interval(stale_s: float) -> float:
    """How often a worker refreshes its capabilities: three times per staleness bound, so one late tick is
    not taken for a dead worker."""
    return stale_s / 3


def publish_worker(factory: sessionmaker[Session], worker: str, stale_s: float) -> CapabilityPublisher:
    """For ``prunescope worker`` (a process with torch): capabilities computed in-process, then the parameter
    facts of the built-in and plugin architectures, all from a background thread. The facts come from this
    interpreter's cache (:func:`_cache_path`) where it holds them all, since building every architecture on the
    meta device takes seconds of the worker's cores; else they are built, then cached."""
    def then(caps: dict[str, Any]) -> None:
        names = [*MODEL_NAMES, *plugin_architecture_names()]
        if not missing_architectures(factory, names) or _cached(factory, names) is not None:
            return
        published = publish_architectures(factory, names)
        log.info("published the parameter facts of %s", ", ".join(published) or "nothing new")
        _remember(factory, caps, names)

    return CapabilityPublisher(factory, worker, refresh_interval(stale_s), capabilities, stale_s=stale_s, then=then)


def _stored_capabilities(factory: sessionmaker[Session]) -> dict[str, Any] | None:
    """The capabilities a predecessor with this fingerprint published (torch-free), or None."""
    with factory() as s:
        row = repo.capabilities_by_fingerprint(s, fingerprint())
        if row is None:
            return None
        return {"fingerprint": row.fingerprint, "devices": list(row.devices), "torch_version": row.torch_version,
                "timm_version": row.timm_version, "architectures": list(row.architectures),
                "timm_models": list(row.timm_models), "datasets": list(row.datasets or ())}


def _child_capabilities(db_url: str, *, facts_missing: bool) -> dict[str, Any] | None:
    """``python -m worker.facts --capabilities`` (publishing missing shape facts too): its last stdout line."""
    env = {**os.environ, "PRUNESCOPE_DATABASE_URL": db_url, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    args = [sys.executable, "-m", "worker.facts", "--capabilities", *([] if facts_missing else ["--no-facts"])]
    try:
        proc = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("could not publish architecture facts: %s", exc)
        return None
    if proc.returncode != 0:
        log.warning("publishing architecture facts failed:\n%s", proc.stderr[-2000:])
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cache_path() -> Path:
    """Where this interpreter's capabilities and architecture facts are kept between processes: they depend
    only on :func:`fingerprint` (host, interpreter, torch/timm versions, GPUs, plugins), so a new store on the
    same machine needs no torch child process to learn them again."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "prunescope" / f"facts-{fingerprint()}.json"


def _cached(factory: sessionmaker[Session], names: Iterable[str]) -> dict[str, Any] | None:
    """The cached capabilities, after publishing the cached facts of ``names`` into this store (torch-free);
    None when the cache lacks any of them (or cannot be read)."""
    try:
        cache = json.loads(_cache_path().read_text())
    except (OSError, ValueError):
        return None
    facts = cache.get("facts", {})
    if not isinstance(cache.get("capabilities"), dict) or any(n not in facts for n in names):
        return None
    with factory() as s:
        for name in names:
            repo.publish_architecture(s, name, **facts[name])
        s.commit()
    return cache["capabilities"]


def _remember(factory: sessionmaker[Session], caps: dict[str, Any], names: Iterable[str]) -> None:
    """Write the capabilities and the store's facts of ``names`` to the cache (atomically; best effort)."""
    facts = {}
    with factory() as s:
        for name in names:
            row = s.get(ArchitectureFacts, name)
            if row is not None:
                facts[name] = {"shapes": dict(row.shapes), "prunable": list(row.prunable),
                               "input_shape": list(row.input_shape), "num_classes": row.num_classes,
                               "torch_version": row.torch_version, "published_by": row.published_by}
    path = _cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"capabilities": caps, "facts": facts}))
        tmp.replace(path)
    except OSError as exc:
        log.info("capabilities not cached (%s)", exc)


def publish_embedded(factory: sessionmaker[Session], db_url: str, worker: str,
                     stale_s: float) -> CapabilityPublisher:
    """For the embedded executor, whose process is the API's and must not import torch: the capabilities a
    predecessor with the same fingerprint stored, or else those a child process reports (which also
    publishes the missing shape facts); refreshed from this process."""
    def compute() -> dict[str, Any] | None:
        names = [*MODEL_NAMES, *plugin_architecture_names()]
        facts_missing = bool(missing_architectures(factory, names))
        stored = _stored_capabilities(factory)
        if stored is not None and not facts_missing:
            return stored
        cached = _cached(factory, names)
        if cached is not None:
            return cached
        caps = _child_capabilities(db_url, facts_missing=facts_missing)
        if caps is not None:
            _remember(factory, caps, names)
        return caps or stored

    return CapabilityPublisher(factory, worker, refresh_interval(stale_s), compute, stale_s=stale_s)


def main(argv: list[str] | None = None) -> int:
    """Publish prunescope's own architectures (and, with ``--capabilities``, the installed plugins') into
    ``PRUNESCOPE_DATABASE_URL`` (the store is migrated); ``--capabilities`` then prints what this interpreter
    can build as one JSON line (``--no-facts``: only that)."""
    from api.shared.settings import get_settings
    from api.store import make_engine, make_session_factory

    args = sys.argv[1:] if argv is None else argv
    report = "--capabilities" in args
    engine = make_engine(get_settings().db_url)
    try:
        if "--no-facts" not in args:
            names = [*MODEL_NAMES, *plugin_architecture_names()] if report else MODEL_NAMES
            publish_architectures(make_session_factory(engine), names)
    finally:
        engine.dispose()
    if report:
        print(json.dumps(capabilities()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
