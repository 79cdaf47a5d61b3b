"""Turn a sensitivity analysis into a pruning schedule.

Per parameter, the chosen sparsity is the highest measured level whose damage stays within the
tolerance, against that parameter's 0.0 row: the drop of a metric where higher is better (top1, in
percentage points), the rise of one where lower is better (loss, perplexity). Any metric the points
have may be planned on (:func:`pruning_core.points.metric_names`); a custom one says its direction. With a
target overall sparsity instead, the tolerance is the smallest one that reaches it, found by
bisection over the measured drops (larger tolerance never lowers any layer's level, so the overall
sparsity is monotone in it). The result is written as a Distiller schedule: AGP by default, or
one-shot pruning at epoch 0 followed by fine-tuning.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .points import higher_is_better as _higher_is_better
from .points import metric_names, metric_value
from .schedule import PolicySpec, PrunerSpec, Schedule


@dataclass
class Plan:
    """Chosen per-parameter sparsities and what they are expected to cost."""

    levels: dict[str, float]  # parameter -> sparsity (0.0 = leave dense)
    metric: str
    tolerance: float
    damage: dict[str, float] = field(default_factory=dict)  # parameter -> measured drop/rise at its level
    group: str = "element"
    overall_sparsity: float | None = None  # weighted by parameter sizes, when known
    higher_is_better: bool = True  # damage is the metric's drop (True) or its rise (False)


def damage_unit(metric: str, higher_is_better: bool) -> str:
    """What a plan's tolerance measures, as reports and schedule comments say it."""
    return "top1 drop (points)" if metric == "top1" else f"{metric} {'drop' if higher_is_better else 'rise'}"


def _curves(points: Iterable[Any], metric: str, higher: bool) -> dict[str, list[tuple[float, float]]]:
    """parameter -> [(sparsity, damage)] sorted by sparsity; needs each parameter's 0.0 row. A metric the
    points do not have is a ValueError naming those they have."""
    points = list(points)
    by_param: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for p in points:
        value = metric_value(p, metric)
        if getattr(p, "measured", True) and value is not None:
            by_param[p.parameter].append((float(p.sparsity), value))
    if not by_param:
        have = metric_names(points)
        if have and metric not in have:
            raise ValueError(f"the points have no {metric!r}; they have: {', '.join(have)}")
        raise ValueError("the sensitivity result has no measured points")
    curves = {}
    for name, rows in by_param.items():
        base = next((v for s, v in rows if s == 0.0), None)
        if base is None:
            raise ValueError(f"parameter {name!r} has no 0.0 row to compare against; "
                             "run the sensitivity analysis with level 0 included")
        curves[name] = sorted((s, base - v if higher else v - base) for s, v in rows)
    return curves


def _group(points: Iterable[Any]) -> str:
    groups = {getattr(p, "group", "element") for p in points}
    if len(groups) > 1:
        raise ValueError(f"the sensitivity result mixes groups {sorted(groups)}; plan one group at a time")
    return groups.pop() if groups else "element"


def _choose(curves: Mapping[str, list[tuple[float, float]]], tolerance: float) -> tuple[dict, dict]:
    levels, damage = {}, {}
    for name, curve in curves.items():
        ok = [(s, d) for s, d in curve if d <= tolerance + 1e-12]
        level, dmg = max(ok) if ok else (0.0, 0.0)
        levels[name], damage[name] = level, dmg
    return levels, damage


def sizes_from_shapes(shapes: Mapping[str, Sequence[int]], prunable: Iterable[str] | None = None) -> dict[str, int]:
    """Element counts of the prunable weights, from stored parameter shapes (no model needed): what
    :func:`plan_for_target` weighs the overall sparsity with. ``prunable`` defaults to
    :func:`pruning_core.preview.default_prunable`."""
    from .preview import default_prunable

    names = list(prunable) if prunable is not None else default_prunable(shapes)
    return {n: math.prod(shapes[n]) for n in names}


def overall_sparsity(levels: Mapping[str, float], sizes: Mapping[str, int]) -> float:
    """Fraction of all ``sizes`` weights pruned when each parameter gets its level (others stay dense)."""
    total = sum(sizes.values())
    if total == 0:
        raise ValueError("no parameter sizes to weigh the sparsities with")
    return sum(int(levels.get(n, 0.0) * size) for n, size in sizes.items()) / total


def choose_levels(points: Iterable[Any], max_drop: float, metric: str = "top1",
                  sizes: Mapping[str, int] | None = None, higher_is_better: bool | None = None) -> Plan:
    """Per parameter, the highest measured level whose damage (the metric's drop, or rise where lower is
    better) is <= ``max_drop``. ``higher_is_better`` is needed for a custom metric only."""
    points = list(points)
    higher = _higher_is_better(metric, higher_is_better)
    curves = _curves(points, metric, higher)
    levels, damage = _choose(curves, max_drop)
    plan = Plan(levels, metric, max_drop, damage, _group(points), higher_is_better=higher)
    if sizes:
        plan.overall_sparsity = overall_sparsity(levels, sizes)
    return plan


def plan_for_target(points: Iterable[Any], target_sparsity: float, sizes: Mapping[str, int],
                    metric: str = "top1", higher_is_better: bool | None = None) -> Plan:
    """The smallest tolerance whose choice reaches ``target_sparsity`` over ``sizes`` (bisection).

    ``sizes`` maps every parameter that counts towards the overall sparsity to its element count
    (parameters without sensitivity rows count as dense). ValueError if even the most tolerant
    choice falls short, naming the best reachable sparsity.
    """
    points = list(points)
    higher = _higher_is_better(metric, higher_is_better)
    curves = _curves(points, metric, higher)
    missing = [n for n in curves if n not in sizes]
    if missing:
        raise ValueError(f"no size known for {', '.join(missing)}")
    candidates = sorted({max(d, 0.0) for curve in curves.values() for _, d in curve})
    best = overall_sparsity(_choose(curves, candidates[-1])[0], sizes)
    if best < target_sparsity:
        raise ValueError(f"target sparsity {target_sparsity} is out of reach: every measured level "
                         f"together gives {best:.4f}")
    lo, hi = 0, len(candidates) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if overall_sparsity(_choose(curves, candidates[mid])[0], sizes) >= target_sparsity:
            hi = mid
        else:
            lo = mid + 1
    levels, damage = _choose(curves, candidates[lo])
    return Plan(levels, metric, candidates[lo], damage, _group(points), overall_sparsity(levels, sizes), higher)


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
    from .schedule import dump_schedule

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
