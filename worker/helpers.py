"""Small computations the API needs from pruning_core, run in a child process (``python -m
worker.helpers NAME`` with JSON on stdin and stdout) so the API process never imports torch."""

from __future__ import annotations

import json
import sys
from typing import Any


def validate_schedule(payload: dict[str, Any]) -> dict[str, Any]:
    from pruning_core.schedule import ScheduleError, parse_schedule

    try:
        schedule = parse_schedule(payload["yaml"], source=payload.get("source", "schedule"))
    except ScheduleError as exc:
        return {"valid": False, "error": str(exc), "key": exc.key or None, "line": exc.line}
    return {"valid": True, "schedule": schedule.to_dict()}


def _model_sizes(model: dict[str, Any]) -> dict[str, int]:
    """Element counts of the model's prunable weights (its checkpoint's head, if it has one), as the CLI's
    ``plan --model`` weighs the overall sparsity."""
    from pruning_core.checkpoint import load_model
    from pruning_core.metrics import prunable_parameters

    return {n: p.numel() for n, p in prunable_parameters(load_model(model.get("checkpoint"), model["arch"]))}


def make_plan(payload: dict[str, Any]) -> dict[str, Any]:
    """Sensitivity points + tolerance (or a target sparsity) -> Distiller YAML; errors come back as text."""
    from types import SimpleNamespace

    from pruning_core.plan import choose_levels, plan_for_target, plan_schedule
    from pruning_core.schedule import dump_schedule

    points = [SimpleNamespace(**p) for p in payload["points"]]
    try:
        if payload.get("target_sparsity") is not None:
            plan = plan_for_target(points, payload["target_sparsity"], _model_sizes(payload["model"]),
                                   payload["metric"])
        else:
            plan = choose_levels(points, payload["max_drop"], payload["metric"])
        schedule = plan_schedule(plan, epochs=payload["epochs"], one_shot=payload.get("one_shot", False))
    except ValueError as exc:
        return {"error": str(exc)}
    return {"yaml": dump_schedule(schedule), "levels": plan.levels, "tolerance": plan.tolerance,
            "overall_sparsity": plan.overall_sparsity}


def preview_schedule(payload: dict[str, Any]) -> dict[str, Any]:
    """The schedule walked epoch by epoch on the model (what ``prunescope prune --dry-run`` prints)."""
    from pruning_core.checkpoint import load_model
    from pruning_core.schedule import ScheduleError, parse_schedule, resolve_schedule
    from pruning_core.scheduler import preview_schedule as preview

    try:
        model = load_model(payload["model"].get("checkpoint"), payload["model"]["arch"])
    except ValueError as exc:
        return {"error": f"model: {exc}"}
    try:
        schedule = parse_schedule(payload["yaml"], source="yaml")
        epochs = preview(schedule, model, lr=payload["lr"], epochs=payload.get("epochs"))
    except ScheduleError as exc:
        return {"error": str(exc)}
    renames = [list(pair) for pair in resolve_schedule(schedule, model).renames]
    return {"renames": renames, "epochs": epochs}


HELPERS = {"validate_schedule": validate_schedule, "make_plan": make_plan, "preview_schedule": preview_schedule}


def main() -> int:
    name = sys.argv[1]
    result = HELPERS[name](json.load(sys.stdin))
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
