"""The optimiser: one level per parameter, chosen to remove the most under a budget on the predicted
damage, or to reach a target with the least predicted damage.

This is a multiple-choice knapsack: each parameter is a class whose items are its levels, weighing their
damage and worth their gain. It is solved exactly on a damage grid by dynamic programming: damages are
rounded *up* to the grid (a plan within the budget on the grid is within it for real), and for top1/top5
without interpolation the grid is the metric's own lattice, ``100 / samples`` points, on which measured
drops lie, so rounding changes nothing. The LP relaxation (the Lagrangian dual, solved greedily on each
class's convex hull) bounds the optimum from the other side; ``gap`` says how far the returned plan can be
from the unrounded optimum (0 on the lattice). 500 parameters x 20 levels take well under a second
(``bench/plans.py`` measures it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .problem import Problem, build_problem
from .result import PlanResult

#: Most damage-grid cells the dynamic programme uses (its time and memory are linear in it).
GRID = 4000
_EPS = 1e-9


@dataclass
class Solution:
    """The chosen item per class, their total gain and damage, and the LP bound with the gap to it."""

    picks: list[int]
    gain: float
    damage: float
    bound: float  # budget mode: no choice gains more; target mode: no choice damages less
    gap: float  # bound - gain (budget mode) or damage - bound (target mode), >= 0


Items = Sequence[Sequence[tuple[float, float]]]  # per class: [(damage >= 0, gain)]


def _hull(items: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the class's LP-efficient items: undominated, on the upper concave hull of (damage, gain)."""
    order = sorted(range(len(items)), key=lambda j: (items[j][0], -items[j][1]))
    front: list[int] = []
    for j in order:
        if not front or items[j][1] > items[front[-1]][1]:
            front.append(j)
    hull: list[int] = []
    for j in front:
        while len(hull) >= 2:
            (w0, v0), (w1, v1), (w2, v2) = items[hull[-2]], items[hull[-1]], items[j]
            if (v1 - v0) * (w2 - w0) <= (v2 - v0) * (w1 - w0):  # the middle point is not above the chord
                hull.pop()
            else:
                break
        hull.append(j)
    return hull


def _segments(items: Items) -> tuple[list[int], list[tuple[float, float, float, int, int]]]:
    """Each class's first hull item, and every hull segment (gain per damage, damage, gain, class, item)
    in decreasing order of gain per damage: the LP relaxation takes them in that order."""
    hulls = [_hull(c) for c in items]
    segments = []
    for i, h in enumerate(hulls):
        for a, b in zip(h, h[1:], strict=False):
            dw, dv = items[i][b][0] - items[i][a][0], items[i][b][1] - items[i][a][1]
            segments.append((dv / dw if dw > 0 else math.inf, dw, dv, i, b))
    segments.sort(key=lambda s: -s[0])
    return [h[0] for h in hulls], segments


def _lp_budget(items: Items, budget: float) -> float:
    """The LP relaxation's gain under ``budget``: an upper bound on any choice's."""
    picks, segments = _segments(items)
    damage, gain = _total(items, picks)
    for slope, dw, dv, _, _ in segments:
        if damage + dw > budget + _EPS:
            return gain + (budget - damage) * slope
        damage, gain = damage + dw, gain + dv
    return gain


def _lp_target(items: Items, target: float) -> tuple[float, list[int]]:
    """The LP relaxation's damage reaching ``target`` (a lower bound on any choice's), and the greedy
    choice that reaches it (the LP's segments, the fractional one taken whole)."""
    picks, segments = _segments(items)
    damage, gain = _total(items, picks)
    bound = None
    for slope, dw, dv, i, b in segments:
        if gain >= target - _tol(target):
            break
        if bound is None and gain + dv >= target - _tol(target):
            bound = damage + (target - gain) / slope
        picks[i], damage, gain = b, damage + dw, gain + dv
    return (damage if bound is None else bound), picks


def _tol(value: float) -> float:
    return _EPS * max(1.0, abs(value))


def _cells(items: Items, step: float) -> list[list[int]]:
    return [[math.ceil(w / step - 1e-6) if w > 0 else 0 for w, _ in c] for c in items]


def _dp(items: Items, cells: list[list[int]], cap: int) -> tuple[np.ndarray, np.ndarray]:
    """best[c] = the most gain with rounded damage <= c cells, and the item chosen per class and cell.
    Ties keep the earlier item (callers order items by damage, so the less damaging one)."""
    best = np.zeros(cap + 1)
    choice = np.zeros((len(items), cap + 1), dtype=np.int32)
    for i, klass in enumerate(items):
        new = np.full(cap + 1, -np.inf)
        pick = choice[i]
        for j, ((_, v), c) in enumerate(zip(klass, cells[i], strict=True)):
            if c > cap:
                continue
            seg = best[: cap + 1 - c] + v
            tgt = new[c:]
            better = seg > tgt
            tgt[better] = seg[better]
            pick[c:][better] = j
        best = new
    return best, choice


def _backtrack(choice: np.ndarray, cells: list[list[int]], cell: int) -> list[int]:
    picks = [0] * len(cells)
    for i in range(len(cells) - 1, -1, -1):
        j = int(choice[i][cell])
        picks[i] = j
        cell -= cells[i][j]
    return picks


def _check(items: Items) -> list[list[tuple[float, float]]]:
    if not items or any(not c for c in items):
        raise ValueError("every class needs at least one item")
    return [[(max(float(w), 0.0), float(v)) for w, v in c] for c in items]


def _total(items: Items, picks: list[int]) -> tuple[float, float]:
    return (sum(items[i][j][0] for i, j in enumerate(picks)), sum(items[i][j][1] for i, j in enumerate(picks)))


def _step(extent: float, resolution: float | None, grid: int) -> float:
    """The grid step: ``resolution`` when the extent fits ``grid`` cells of it, else extent / grid."""
    if resolution is not None and resolution > 0 and extent / resolution <= grid:
        return resolution
    return extent / grid


def solve_budget(items: Items, budget: float, *, resolution: float | None = None, grid: int = GRID) -> Solution:
    """The most total gain with total damage <= ``budget``: one item per class (damages below 0 count as 0).

    Exact when the damages are multiples of ``resolution`` (and ``budget / resolution <= grid``); else
    exact on damages rounded up to a grid of ``grid`` cells, within ``gap`` of the optimum.
    """
    items = _check(items)
    if budget < 0:
        raise ValueError("budget must be >= 0")
    lightest = sum(min(w for w, _ in c) for c in items)
    if lightest > budget + _EPS:
        raise ValueError(f"budget {budget:g} is below the least damage any choice has ({lightest:g})")

    bound = _lp_budget(items, budget)
    step = _step(budget, resolution, grid) if budget > 0 else 1.0
    cap = math.floor(budget / step + 1e-6) if budget > 0 else 0
    cells = _cells(items, step)
    best, choice = _dp(items, cells, cap)
    top = best[cap]
    cell = int(np.argmax(best >= top - _tol(top)))  # the least damage giving the most gain
    picks = _fill(items, _backtrack(choice, cells, cell), budget)
    damage, gain = _total(items, picks)
    return Solution(picks, gain, damage, max(bound, gain), max(bound - gain, 0.0))


def _fill(items: Items, picks: list[int], budget: float) -> list[int]:
    """Spend what rounding up left of the budget: swap in the item that gains most within what is left, until
    none does (only ever raises the gain; nothing to do on the lattice)."""
    picks = list(picks)
    left = budget - _total(items, picks)[0]
    while True:
        best = None
        for i, klass in enumerate(items):
            w0, v0 = klass[picks[i]]
            for j, (w, v) in enumerate(klass):
                if v > v0 + 1e-12 and w - w0 <= left + _EPS and (best is None or v - v0 > best[0]):
                    best = (v - v0, i, j, w - w0)
        if best is None:
            return picks
        _, i, j, dw = best
        picks[i], left = j, left - dw


def _trim(items: Items, picks: list[int], target: float) -> list[int]:
    """The same damage or less with the least overshoot: lower any choice to the item gaining least that keeps
    the target reached and does not add damage, until none can be lowered. Zero-damage levels (noise clamped
    to 0) would otherwise all be taken, and a plan meant for 80 % would prune 84 % of the weights."""
    picks = list(picks)
    floor = target - _tol(target)
    lowered = True
    while lowered:
        lowered = False
        gain = _total(items, picks)[1]
        for i, klass in enumerate(items):
            w0, v0 = klass[picks[i]]
            fits = [j for j, (w, v) in enumerate(klass) if v < v0 - 1e-12 and w <= w0 + _EPS and gain - v0 + v >= floor]
            if fits:
                j = min(fits, key=lambda j, k=klass: (k[j][1], k[j][0]))
                gain, picks[i], lowered = gain - v0 + klass[j][1], j, True
    return picks


def solve_target(items: Items, target: float, *, resolution: float | None = None, grid: int = GRID) -> Solution:
    """The least total damage with total gain >= ``target``: one item per class (damages below 0 count as 0).

    Exact as :func:`solve_budget` says; ValueError naming the most gain reachable if ``target`` is not.
    """
    items = _check(items)
    most = sum(max(v for _, v in c) for c in items)
    if most < target - _tol(target):
        raise ValueError(f"target {target:g} is out of reach: every class at its most gives {most:g}")

    bound, greedy = _lp_target(items, target)
    greedy = _trim(items, greedy, target)
    damage, gain = _total(items, greedy)
    if damage <= _EPS:
        return Solution(greedy, gain, damage, 0.0, 0.0)
    step = _step(damage, resolution, grid)
    cells = _cells(items, step)
    cap = sum(cells[i][j] for i, j in enumerate(greedy))  # the greedy choice fits: the rounded optimum is within
    best, choice = _dp(items, cells, cap)
    reached = np.nonzero(best >= target - _tol(target))[0]
    picks = _backtrack(choice, cells, int(reached[0]))
    if _total(items, picks)[0] > damage:  # rounding up can only cost what the greedy choice does not
        picks = greedy
    picks = _trim(items, picks, target)
    damage, gain = _total(items, picks)
    return Solution(picks, gain, damage, min(bound, damage), max(damage - bound, 0.0))


def _resolution(points: list[Any], metric: str, interpolate: int) -> float | None:
    """The lattice top1/top5 drops lie on (100 / samples points) when every point counts the same samples."""
    if metric not in ("top1", "top5") or interpolate:
        return None
    samples = {int(getattr(p, "samples", 0) or 0) for p in points if getattr(p, "measured", True)}
    return 100.0 / samples.pop() if len(samples) == 1 and 0 not in samples else None


def solve(problem: Problem, *, budget: float | None = None, target: float | None = None,
          resolution: float | None = None, grid: int = GRID, method: str = "optimal") -> PlanResult:
    """The optimal plan of ``problem``: under ``budget`` (predicted damage) or reaching ``target`` (a fraction
    of ``problem.total``: overall sparsity, MACs cut, latency saved)."""
    if (budget is None) == (target is None):
        raise ValueError("give exactly one of budget and target")
    names = list(problem.options)
    items = [[(o.damage, o.gain) for o in problem.options[n]] for n in names]
    if budget is not None:
        sol = solve_budget(items, budget, resolution=resolution, grid=grid)
    else:
        if not 0.0 <= target <= 1.0:
            raise ValueError("target is a fraction of the dense model (0..1)")
        sol = solve_target(items, target * problem.total, resolution=resolution, grid=grid)
    levels = {n: problem.options[n][j].level for n, j in zip(names, sol.picks, strict=True)}
    return problem.result(levels, method, budget=budget, target=target, bound=sol.bound, gap=sol.gap)


def optimise(points: Iterable[Any], *, objective: str = "sparsity", budget: float | None = None,
             target: float | None = None, sizes: Mapping[str, int] | None = None, metric: str = "top1",
             higher_is_better: bool | None = None, interpolate: int = 0, resolution: float | None = None,
             grid: int = GRID) -> PlanResult:
    """Per parameter one level (measured, or ``interpolate`` levels inside each measured gap) that maximises
    the ``objective`` removed (``sparsity``: weights, ``macs``: MACs, ``latency``: ms) with the summed predicted
    damage of ``metric`` <= ``budget``; or, with ``target``, the least summed damage that removes that
    fraction of the dense model's total. ``resolution`` is the damage grid step (default: top1/top5's own
    lattice when measured levels only, else the extent over ``grid`` cells)."""
    points = list(points)
    problem = build_problem(points, objective=objective, sizes=sizes, metric=metric,
                            higher_is_better=higher_is_better, interpolate=interpolate)
    if resolution is None:
        resolution = _resolution(points, metric, interpolate)
    return solve(problem, budget=budget, target=target, resolution=resolution, grid=grid)
