"""Today's rule: every parameter within one tolerance of its own drop (the equal-tolerance baseline).

Per parameter, the chosen sparsity is the highest measured level whose damage stays within the
tolerance. With a target overall sparsity instead, the tolerance is the smallest one that reaches it,
found by bisection over the measured drops (larger tolerance never lowers any layer's level, so the
overall sparsity is monotone in it). The rule bounds each layer's drop, not the whole model's: the
optimiser (:mod:`pruning_core.plan.optimise`) bounds the sum.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..points import higher_is_better as _higher_is_better
from .base import Plan, damage_curves, overall_sparsity, points_group


def choose_within(curves: Mapping[str, list[tuple[float, float]]], tolerance: float) -> tuple[dict, dict]:
    """(levels, damage): per parameter the highest measured level whose damage is <= ``tolerance``."""
    levels, damage = {}, {}
    for name, curve in curves.items():
        ok = [(s, d) for s, d in curve if d <= tolerance + 1e-12]
        level, dmg = max(ok) if ok else (0.0, 0.0)
        levels[name], damage[name] = level, dmg
    return levels, damage


def tolerances(curves: Mapping[str, list[tuple[float, float]]]) -> list[float]:
    """Every tolerance at which the rule's choice can change (the measured damages, negatives as 0)."""
    return sorted({max(d, 0.0) for curve in curves.values() for _, d in curve})


def choose_levels(points: Iterable[Any], max_drop: float, metric: str = "top1",
                  sizes: Mapping[str, int] | None = None, higher_is_better: bool | None = None) -> Plan:
    """Per parameter, the highest measured level whose damage (the metric's drop, or rise where lower is
    better) is <= ``max_drop``. ``higher_is_better`` is needed for a custom metric only."""
    points = list(points)
    higher = _higher_is_better(metric, higher_is_better)
    curves = damage_curves(points, metric, higher)
    levels, damage = choose_within(curves, max_drop)
    plan = Plan(levels, metric, max_drop, damage, points_group(points), higher_is_better=higher)
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
    curves = damage_curves(points, metric, higher)
    missing = [n for n in curves if n not in sizes]
    if missing:
        raise ValueError(f"no size known for {', '.join(missing)}")
    candidates = tolerances(curves)
    best = overall_sparsity(choose_within(curves, candidates[-1])[0], sizes)
    if best < target_sparsity:
        raise ValueError(f"target sparsity {target_sparsity} is out of reach: every measured level "
                         f"together gives {best:.4f}")
    lo, hi = 0, len(candidates) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if overall_sparsity(choose_within(curves, candidates[mid])[0], sizes) >= target_sparsity:
            hi = mid
        else:
            lo = mid + 1
    levels, damage = choose_within(curves, candidates[lo])
    return Plan(levels, metric, candidates[lo], damage, points_group(points), overall_sparsity(levels, sizes), higher)
