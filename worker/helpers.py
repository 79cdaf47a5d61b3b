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


def make_plan(payload: dict[str, Any]) -> dict[str, Any]:
    """Sensitivity points + tolerance -> Distiller YAML (pruning_core.plan); errors come back as text."""
    from types import SimpleNamespace

    from pruning_core.plan import choose_levels, plan_schedule
    from pruning_core.schedule import dump_schedule

    points = [SimpleNamespace(**p) for p in payload["points"]]
    try:
        plan = choose_levels(points, payload["max_drop"], payload["metric"])
        schedule = plan_schedule(plan, epochs=payload["epochs"])
    except ValueError as exc:
        return {"error": str(exc)}
    return {"yaml": dump_schedule(schedule), "levels": plan.levels}


HELPERS = {"validate_schedule": validate_schedule, "make_plan": make_plan}


def main() -> int:
    name = sys.argv[1]
    result = HELPERS[name](json.load(sys.stdin))
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
