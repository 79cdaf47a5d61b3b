"""Small computations the API needs from pruning_core, run in a child process so the API process never
imports torch: ``python -m worker.helpers --serve`` is one of the API's warm pool of helpers
(:mod:`api.compute`; one JSON request line in, one answer line out, until stdin closes), and
``python -m worker.helpers NAME`` runs one call (JSON payload on stdin, result on stdout).

Each function imports what it needs when first called, so a helper that only checks schedules or
scans uploads never imports torch, and one that did keeps it for the next call.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, BinaryIO


def validate_schedule(payload: dict[str, Any]) -> dict[str, Any]:
    """The API answers this in-process now (torch-free); kept so the pool can be exercised cheaply."""
    from pruning_core.schedule import check_schedule

    return check_schedule(payload["yaml"], source=payload.get("source", "schedule"))


def _model_sizes(model: dict[str, Any]) -> dict[str, int]:
    """Element counts of the model's prunable weights (its checkpoint's head, if it has one), as the CLI's
    ``plan --model`` weighs the overall sparsity."""
    from pruning_core.checkpoint import load_model
    from pruning_core.metrics import prunable_parameters

    return {n: p.numel() for n, p in prunable_parameters(load_model(model.get("checkpoint"), model["arch"]))}


def make_plan(payload: dict[str, Any]) -> dict[str, Any]:
    """A plan for a target sparsity, which needs the model's parameter sizes (so the model is built);
    plans for a tolerance are answered by the API in-process with the same :func:`plan_answer`."""
    from types import SimpleNamespace

    from pruning_core.plan import plan_answer

    points = [SimpleNamespace(**p) for p in payload["points"]]
    sizes = _model_sizes(payload["model"]) if payload.get("target_sparsity") is not None else None
    return plan_answer(points, max_drop=payload.get("max_drop"), target_sparsity=payload.get("target_sparsity"),
                       sizes=sizes, metric=payload["metric"], epochs=payload["epochs"],
                       one_shot=payload.get("one_shot", False), higher_is_better=payload.get("higher_is_better"))


def preview_schedule(payload: dict[str, Any]) -> dict[str, Any]:
    """The schedule walked epoch by epoch on the model (what ``prunescope prune --dry-run`` prints)."""
    from pruning_core.schedule import ScheduleError, parse_schedule, resolve_schedule

    try:  # first, and torch-free: a bad (or hostile) document is refused before any model is built
        schedule = parse_schedule(payload["yaml"], source="yaml")
    except ScheduleError as exc:
        return {"error": str(exc)}
    from pruning_core.checkpoint import load_model
    from pruning_core.scheduler import preview_schedule as preview

    try:
        model = load_model(payload["model"].get("checkpoint"), payload["model"]["arch"])
    except ValueError as exc:
        return {"error": f"model: {exc}"}
    try:
        epochs = preview(schedule, model, lr=payload["lr"], epochs=payload.get("epochs"))
    except ScheduleError as exc:
        return {"error": str(exc)}
    renames = [list(pair) for pair in resolve_schedule(schedule, model).renames]
    return {"renames": renames, "epochs": epochs}


def scan_checkpoint(payload: dict[str, Any]) -> dict[str, Any]:
    """The upload check of the file at ``path`` (torch-free), a torch.save zip or a safetensors file (told
    apart by content): if it passes, ``format``, ``shapes`` (``[[name, dims or null], ...]``, the state_dict's
    declared tensor sizes), ``thinned`` and ``metadata`` (a safetensors file's strings); else ``error`` (the
    reason) and ``unsafe`` (it carries code). ``limits`` are :class:`ScanLimits` fields."""
    from pruning_core.checkpoint_scan import (
        FORMAT_ZIP,
        CheckpointError,
        ScanLimits,
        UnsafeCheckpointError,
        detect_format,
        is_program,
        scan_checkpoint,
    )
    from pruning_core.safetensors_scan import SafetensorsScan

    limits = ScanLimits(**payload.get("limits", {}))
    try:
        if is_program(payload["path"]):
            return _scan_program(payload["path"], limits)
        scanned = scan_checkpoint(payload["path"], limits)
    except CheckpointError as exc:
        return {"error": str(exc), "unsafe": isinstance(exc, UnsafeCheckpointError)}
    return {"format": detect_format(payload["path"]) or FORMAT_ZIP,
            "shapes": [[n, None if d is None else list(d)] for n, d in scanned.shapes.items()],
            "thinned": scanned.thinned,
            "metadata": scanned.metadata if isinstance(scanned, SafetensorsScan) else {}}


def _scan_program(path: str, limits: Any) -> dict[str, Any]:
    """A torch.export program's upload check: the static scan (torch-free, so a hostile file is refused before
    torch is imported), then, where torch is installed, a load of the scanned file (which runs no code from
    it) to say whether fine-tuning can work on it: ``fine_tuning`` is None if it can, else why not
    (sensitivity analysis works on any program)."""
    from pruning_core.checkpoint_scan import FORMAT_PROGRAM, scan_program

    scanned = scan_program(path, limits)
    out: dict[str, Any] = {"format": FORMAT_PROGRAM, "thinned": False, "metadata": {},
                           "shapes": [[n, None if d is None else list(d)] for n, d in scanned.shapes.items()]}
    try:
        from pruning_core.exported import load_program, trainable
    except ImportError:  # an API-only install: the worker checks it when a prune job loads it
        return out
    out["fine_tuning"] = trainable(load_program(path, limits, scanned=scanned))
    return out


HELPERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "validate_schedule": validate_schedule, "make_plan": make_plan, "preview_schedule": preview_schedule,
    "scan_checkpoint": scan_checkpoint,
}


def serve(requests: BinaryIO, answers: BinaryIO) -> None:
    """Answer ``{"name", "payload"}`` lines with ``{"result"}`` or ``{"failure"}`` lines until EOF."""
    for line in requests:
        try:
            request = json.loads(line)
            answer: dict[str, Any] = {"result": HELPERS[request["name"]](request["payload"])}
        except Exception as exc:  # noqa: BLE001 - reported to the caller, the helper stays up
            answer = {"failure": f"{type(exc).__name__}: {str(exc)[:500]}"}
        answers.write((json.dumps(answer) + "\n").encode())
        answers.flush()


def _exit_with_parent(period_s: float = 1.0) -> None:
    """A helper must not outlive the server that started it, even mid-call after a SIGKILL (an idle one
    sees its stdin close): once it is re-parented, it exits. The pool names the parent in the
    environment, so a parent that died while this process was still starting is noticed too."""
    parent = int(os.environ.get("PRUNESCOPE_HELPER_PARENT") or os.getppid())

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(period_s)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main() -> int:
    if sys.argv[1] == "--serve":
        _exit_with_parent()
        # Only answers may reach the pipe: anything a library prints goes to stderr instead.
        answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
        serve(sys.stdin.buffer, answers)
        return 0
    result = HELPERS[sys.argv[1]](json.load(sys.stdin))
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
