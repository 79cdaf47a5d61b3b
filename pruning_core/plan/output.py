"""A plan written out: a Distiller schedule, a text table, the API's answer.

The schedule is AGP by default, or one-shot pruning at epoch 0 followed by fine-tuning. Every kind of
plan (the rule's :class:`~pruning_core.plan.base.Plan`, the optimiser's and the baselines'
:class:`~pruning_core.plan.result.PlanResult`) is written by the same code.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from ..schedule import PolicySpec, PrunerSpec, Schedule
from .base import Plan, damage_unit
from .rule import choose_levels, plan_for_target


def _pruner_name(level: float) -> str:
    return "prune_" + f"{level:.4f}".rstrip("0").rstrip(".").replace(".", "_")


def plan_schedule(plan: Plan, *, epochs: int = 10, one_shot: bool = False,
                  initial_sparsity: float = 0.05) -> Schedule:
    """A Distiller schedule that prunes each parameter to its planned level.

    AGP (default) ramps up over the first two thirds of ``epochs`` (every epoch), leaving the rest
    for fine-tuning; ``one_shot`` prunes everything at epoch 0. Parameters at level 0 are left out;
    parameters sharing a level share one pruner.
    """
    if epochs < 1:
        raise ValueError("epochs must be >= 1")
    by_level: dict[float, list[str]] = defaultdict(list)
    for name, level in plan.levels.items():
        if level > 0:
            by_level[level].append(name)
    if not by_level:
        raise ValueError("no parameter can be pruned within the tolerance; nothing to schedule")
    structured = plan.group in ("filter", "filters", "channel", "channels")
    group_type = "Channels" if plan.group.startswith("channel") else "Filters"
    schedule = Schedule()
    if one_shot:
        for level, names in sorted(by_level.items()):
            name = _pruner_name(level)
            if structured:
                args: dict[str, Any] = {"group_type": group_type, "desired_sparsity": level, "weights": names}
                cls = "L1RankedStructureParameterPruner"
            else:
                args, cls = {"levels": dict.fromkeys(names, level)}, "SparsityLevelParameterPruner"
            schedule.pruners[name] = PrunerSpec(name, cls, args)
            schedule.policies.append(PolicySpec("pruner", name, epochs=[0]))
        return schedule
    if epochs < 3:
        raise ValueError("AGP needs at least 3 epochs (2 pruning steps, then fine-tuning); use one_shot")
    end = max(2, (2 * epochs) // 3)
    for level, names in sorted(by_level.items()):
        name = _pruner_name(level)
        args = {"initial_sparsity": min(initial_sparsity, level / 2), "final_sparsity": level}
        if structured:
            args["group_type"] = group_type
        args["weights"] = names
        cls = "L1RankedStructureParameterPruner_AGP" if structured else "AutomatedGradualPruner"
        schedule.pruners[name] = PrunerSpec(name, cls, args)
        schedule.policies.append(PolicySpec("pruner", name, starting_epoch=0, ending_epoch=end, frequency=1))
    return schedule


def format_plan(plan: Plan) -> str:
    """A short text table of the choices (used as the schedule file's header comment)."""
    unit = damage_unit(plan.metric, plan.higher_is_better)
    lines = [f"plan: tolerance {plan.tolerance:g} ({unit}), group {plan.group}"]
    if plan.overall_sparsity is not None:
        lines.append(f"expected overall weight sparsity: {100 * plan.overall_sparsity:.2f}%")
    width = max(len(n) for n in plan.levels)
    for name, level in plan.levels.items():
        lines.append(f"  {name:<{width}}  sparsity {level:5.3f}  measured {unit} {plan.damage[name]:+.3f}")
    return "\n".join(lines)


def plan_answer(points: Iterable[Any], *, max_drop: float | None = None, target_sparsity: float | None = None,
                sizes: Mapping[str, int] | None = None, metric: str = "top1", epochs: int = 10,
                one_shot: bool = False, higher_is_better: bool | None = None) -> dict[str, Any]:
    """A plan as the API answers it: the schedule's ``yaml``, ``levels`` per parameter, the ``tolerance``
    used, ``overall_sparsity`` and what the tolerance measured (``metric``, ``higher_is_better``, ``unit``);
    or ``error`` (why no plan fits). ``target_sparsity`` needs ``sizes``
    (every prunable parameter's element count). Torch-free: the API runs it in its own process."""
    from ..schedule import dump_schedule

    try:
        if target_sparsity is not None:
            if sizes is None:
                raise ValueError("a target sparsity needs the model's parameter sizes")
            plan = plan_for_target(points, target_sparsity, sizes, metric, higher_is_better)
        else:
            if max_drop is None:
                raise ValueError("give max_drop or target_sparsity")
            plan = choose_levels(points, max_drop, metric, higher_is_better=higher_is_better)
        schedule = plan_schedule(plan, epochs=epochs, one_shot=one_shot)
    except ValueError as exc:
        return {"error": str(exc)}
    return {"yaml": dump_schedule(schedule), "levels": plan.levels, "tolerance": plan.tolerance,
            "overall_sparsity": plan.overall_sparsity, "metric": plan.metric,
            "higher_is_better": plan.higher_is_better, "unit": damage_unit(plan.metric, plan.higher_is_better)}
