"""A planning problem read from sensitivity points: per parameter, the levels one may choose, what each
is predicted to cost (damage) and to remove (gain, in the objective's units).

Objectives: ``sparsity`` (weights removed, ``int(level * size)`` as level pruning counts them), ``macs``
(MACs per sample removed, from the points' ``macs``: structured groups) and ``latency`` (ms saved, from the
points' ``latency_ms``). The damage and gain of a level between two measured ones are interpolated
linearly (``interpolate`` levels per gap); a level past the last measured one is not predicted. Damage
below zero (the pruned layer measured better than the dense one) is evaluation noise and counts as 0, so
no plan can spend it.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..points import higher_is_better as _higher_is_better
from .base import damage_curves, overall_sparsity, points_group
from .result import PlanResult

OBJECTIVES: tuple[str, ...] = ("sparsity", "macs", "latency")
_FIELD = {"macs": "macs", "latency": "latency_ms"}


@dataclass(frozen=True)
class Option:
    """One level a parameter may get: its predicted damage (>= 0) and gain."""

    level: float
    damage: float
    gain: float
    interpolated: bool = False


def _interp(curve: list[tuple[float, float]], level: float) -> float:
    """Linear interpolation of a sorted curve at ``level``; past the last measured level its last value (an
    underestimate of damage: only a baseline's levels, never the optimiser's, go there)."""
    xs = [s for s, _ in curve]
    if level < xs[0] - 1e-12:
        raise ValueError(f"level {level:g} is below the measured range {xs[0]:g}..{xs[-1]:g}")
    if level >= xs[-1] - 1e-12:
        return curve[-1][1]
    i = bisect.bisect_left(xs, level - 1e-12)
    if i < len(xs) and abs(xs[i] - level) <= 1e-12:
        return curve[i][1]
    (s0, v0), (s1, v1) = curve[i - 1], curve[i]
    return v0 + (v1 - v0) * (level - s0) / (s1 - s0)


@dataclass
class Problem:
    """Everything the optimiser and the baselines need, so they all predict damage and gain alike."""

    objective: str
    metric: str
    higher_is_better: bool
    group: str
    curves: dict[str, list[tuple[float, float]]]  # parameter -> [(level, raw damage)]
    gains: dict[str, list[tuple[float, float]]]  # parameter -> [(level, gain)] (macs, latency)
    sizes: dict[str, int] | None
    total: float  # the dense model's amount of the objective's units
    options: dict[str, list[Option]]
    macs: dict[str, list[tuple[float, float]]]  # parameter -> [(level, MACs left)] where the points have them
    latency: dict[str, list[tuple[float, float]]]  # parameter -> [(level, ms)] where the points have them

    def damage_at(self, name: str, level: float) -> float:
        """Predicted raw damage of ``name`` at ``level`` (interpolated between measured levels)."""
        return _interp(self.curves[name], level)

    def gain_at(self, name: str, level: float) -> float:
        """What ``name`` at ``level`` removes, in the objective's units."""
        if self.objective == "sparsity":
            return float(int(level * self.sizes[name]))
        return _interp(self.gains[name], level)

    def max_level(self, name: str) -> float:
        return self.curves[name][-1][0]

    def result(self, levels: Mapping[str, float], method: str, *, budget: float | None = None,
               target: float | None = None, bound: float | None = None, gap: float | None = None) -> PlanResult:
        """The plan of ``levels`` (every parameter of the problem; missing ones stay dense) with its
        predicted damage, gain, overall sparsity and MACs/latency ratios."""
        levels = {n: float(levels.get(n, 0.0)) for n in self.curves}
        damage = {n: self.damage_at(n, lv) for n, lv in levels.items()}
        measured = {n: {s for s, _ in c} for n, c in self.curves.items()}
        clamped = [max(d, 0.0) for d in damage.values()]
        result = PlanResult(levels=levels, metric=self.metric, tolerance=max(clamped, default=0.0), damage=damage,
                            group=self.group, higher_is_better=self.higher_is_better, method=method,
                            objective=self.objective, budget=budget, target=target,
                            predicted_drop=sum(clamped), total=self.total,
                            gain=sum(self.gain_at(n, lv) for n, lv in levels.items()),
                            interpolated=[n for n, lv in levels.items() if lv not in measured[n]],
                            bound=bound, gap=gap)
        if self.sizes:
            result.overall_sparsity = overall_sparsity(levels, self.sizes)
        result.macs_ratio = _ratio(self.macs, levels)
        result.latency_ratio = _ratio(self.latency, levels)
        return result


def _ratio(curves: dict[str, list[tuple[float, float]]], levels: Mapping[str, float]) -> float | None:
    """Dense amount minus the removed amounts (added over parameters), over the dense amount."""
    if not curves:
        return None
    dense = max(c[0][1] for c in curves.values())
    if not dense:
        return None
    removed = sum(c[0][1] - _interp(c, levels.get(n, 0.0)) for n, c in curves.items())
    return (dense - removed) / dense


def _field_curves(points: list[Any], attr: str, names: Iterable[str]) -> dict[str, list[tuple[float, float]]]:
    """parameter -> [(level, value of ``attr``)] over the measured points that have it; {} if some lack it."""
    out: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    for p in points:
        value = getattr(p, attr, None)
        if p.parameter in out and getattr(p, "measured", True):
            if value is None:
                return {}
            out[p.parameter].append((float(p.sparsity), float(value)))
    if any(not rows or min(s for s, _ in rows) != 0.0 for rows in out.values()):
        return {}
    return {n: sorted(rows) for n, rows in out.items()}


def _sizes(points: list[Any], names: Iterable[str], sizes: Mapping[str, int] | None) -> dict[str, int] | None:
    """The given sizes (they must cover every planned parameter), else each parameter's non-zeros at level 0."""
    names = list(names)
    if sizes is not None:
        missing = [n for n in names if n not in sizes]
        if missing:
            raise ValueError(f"no size known for {', '.join(missing)}")
        return dict(sizes)
    dense = {p.parameter: int(getattr(p, "nnz", 0) or 0) for p in points if float(p.sparsity) == 0.0}
    if all(dense.get(n, 0) > 0 for n in names):
        return {n: dense[n] for n in names}
    return None


def _levels(measured: list[float], interpolate: int) -> list[tuple[float, bool]]:
    """The measured levels and ``interpolate`` evenly spaced ones inside each gap: (level, interpolated)."""
    out = [(measured[0], False)]
    for lo, hi in zip(measured, measured[1:], strict=False):
        step = (hi - lo) / (interpolate + 1)
        out += [(round(lo + k * step, 6), True) for k in range(1, interpolate + 1)]
        out.append((hi, False))
    return out


def build_problem(points: Iterable[Any], *, objective: str = "sparsity", sizes: Mapping[str, int] | None = None,
                  metric: str = "top1", higher_is_better: bool | None = None, interpolate: int = 0) -> Problem:
    """The problem of choosing one level per parameter of ``points`` for ``objective``.

    ``sizes`` (parameter -> element count; default: the 0.0 points' ``nnz``) weigh the overall sparsity and
    the ``sparsity`` objective; every prunable weight may be listed (those without points count as dense).
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective {objective!r}: choose one of {', '.join(OBJECTIVES)}")
    if interpolate < 0:
        raise ValueError("interpolate must be >= 0")
    points = list(points)
    higher = _higher_is_better(metric, higher_is_better)
    curves = damage_curves(points, metric, higher)
    sizes = _sizes(points, curves, sizes)
    macs = _field_curves(points, "macs", curves)
    latency = _field_curves(points, "latency_ms", curves)
    if objective == "sparsity":
        if sizes is None:
            raise ValueError("the sparsity objective needs the parameters' sizes (give sizes)")
        gains: dict[str, list[tuple[float, float]]] = {}
        total = float(sum(sizes.values()))
    else:
        have = macs if objective == "macs" else latency
        if not have:
            raise ValueError(f"the {objective} objective needs points that carry {_FIELD[objective]} "
                             "(a structured group; latency=True for latency)")
        gains = {n: [(s, c[0][1] - v) for s, v in c] for n, c in have.items()}
        total = max(c[0][1] for c in have.values())
    problem = Problem(objective, metric, higher, points_group(points), curves, gains, sizes, total, {}, macs, latency)
    for name, curve in curves.items():
        opts = []
        for level, interp in _levels([s for s, _ in curve], interpolate):
            opts.append(Option(level, max(problem.damage_at(name, level), 0.0), problem.gain_at(name, level), interp))
        problem.options[name] = opts
    return problem
