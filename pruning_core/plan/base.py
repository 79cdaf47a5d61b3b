"""What every plan shares: the chosen levels, the damage curves read from sensitivity points, sizes.

A plan's damage for one parameter at one level is measured against that parameter's 0.0 row: the drop
of a metric where higher is better (top1, in percentage points), the rise of one where lower is better
(loss, perplexity). Any metric the points have may be planned on (:func:`pruning_core.points.metric_names`);
a custom one says its direction.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..points import metric_names, metric_value


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


def damage_curves(points: Iterable[Any], metric: str, higher: bool) -> dict[str, list[tuple[float, float]]]:
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


def points_group(points: Iterable[Any]) -> str:
    """The one structure group of a set of points (a plan covers one group at a time)."""
    groups = {getattr(p, "group", "element") for p in points}
    if len(groups) > 1:
        raise ValueError(f"the sensitivity result mixes groups {sorted(groups)}; plan one group at a time")
    return groups.pop() if groups else "element"


def sizes_from_shapes(shapes: Mapping[str, Sequence[int]], prunable: Iterable[str] | None = None) -> dict[str, int]:
    """Element counts of the prunable weights, from stored parameter shapes (no model needed): what
    :func:`plan_for_target` weighs the overall sparsity with. ``prunable`` defaults to
    :func:`pruning_core.preview.default_prunable`."""
    from ..preview import default_prunable

    names = list(prunable) if prunable is not None else default_prunable(shapes)
    return {n: math.prod(shapes[n]) for n in names}


def planned_sizes(shapes: Mapping[str, Sequence[int]], prunable: Iterable[str] | None,
                  points: Iterable[Any]) -> dict[str, int]:
    """What an optimised plan weighs its sparsity with: every prunable weight (dense unless planned) and every
    parameter the points plan, also one outside the default prunable set (an LSTM's ``rnn.weight_hh_l0``). The
    API (stored shapes) and a plan job (the built model) both call it, so their plans weigh alike."""
    from ..preview import default_prunable

    base = list(prunable) if prunable is not None else default_prunable(shapes)
    return sizes_from_shapes(shapes, dict.fromkeys([*base, *(p.parameter for p in points if p.parameter in shapes)]))


def overall_sparsity(levels: Mapping[str, float], sizes: Mapping[str, int]) -> float:
    """Fraction of all ``sizes`` weights pruned when each parameter gets its level (others stay dense)."""
    total = sum(sizes.values())
    if total == 0:
        raise ValueError("no parameter sizes to weigh the sparsities with")
    return sum(int(levels.get(n, 0.0) * size) for n, size in sizes.items()) / total
