"""Baselines the optimiser is compared with, on the same problem and returned as the same :class:`PlanResult`:

- ``uniform``: one sparsity for every planned parameter;
- ``equal_tolerance``: today's rule (every parameter within one tolerance of its own drop);
- ``global_magnitude``: ``torch.nn.utils.prune.global_unstructured`` semantics, one |w| threshold over all
  planned weights, so the smallest weights of the whole model go first (element group);
- ``torch_pruning_global``: Torch-Pruning's global ranking (``MetaPruner(global_pruning=True)`` with L1
  group importance) run on a copy, its per-layer filter counts read back as levels (filter group).

A target is met on the plan's *predicted* gain (:class:`~pruning_core.plan.problem.Problem`), as the
optimiser meets it. The last two need the weights (torch, imported inside them); this module does not.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from .problem import Problem, build_problem
from .result import PlanResult
from .rule import choose_within, tolerances

_BISECTIONS = 60


def _problem(points: Iterable[Any], objective: str, sizes: Mapping[str, int] | None, metric: str,
             higher_is_better: bool | None) -> Problem:
    return build_problem(points, objective=objective, sizes=sizes, metric=metric, higher_is_better=higher_is_better)


def _one(budget: float | None, target: float | None) -> None:
    if (budget is None) == (target is None):
        raise ValueError("give exactly one of budget and target")


def _gain(problem: Problem, levels: Mapping[str, float]) -> float:
    return sum(problem.gain_at(n, lv) for n, lv in levels.items())


def _needed(problem: Problem, target: float) -> float:
    if not 0.0 <= target <= 1.0:
        raise ValueError("target is a fraction of the dense model (0..1)")
    return target * problem.total - 1e-9 * max(1.0, problem.total)


def _smallest(knob: Callable[[float], dict[str, float]], problem: Problem, target: float, hi: float,
              what: str, rounds: int = _BISECTIONS) -> dict[str, float]:
    """The levels of the smallest knob value in [0, hi] whose predicted gain reaches ``target`` (bisection;
    the gain grows with the knob)."""
    need = _needed(problem, target)
    top = knob(hi)
    if _gain(problem, top) < need:
        reached = _gain(problem, top) / problem.total if problem.total else 0.0
        raise ValueError(f"{what}: target {target:g} is out of reach (at most {reached:.4f})")
    lo = 0.0
    for _ in range(rounds):
        mid = (lo + hi) / 2
        if _gain(problem, knob(mid)) >= need:
            hi = mid
        else:
            lo = mid
    return knob(hi)


def uniform(points: Iterable[Any], *, objective: str = "sparsity", budget: float | None = None,
            target: float | None = None, sizes: Mapping[str, int] | None = None, metric: str = "top1",
            higher_is_better: bool | None = None) -> PlanResult:
    """One level for every planned parameter: the smallest reaching ``target``, or the highest whose
    predicted summed damage is within ``budget`` (levels up to the lowest last measured level)."""
    _one(budget, target)
    problem = _problem(points, objective, sizes, metric, higher_is_better)
    top = min(problem.max_level(n) for n in problem.curves)

    def knob(level: float) -> dict[str, float]:
        return dict.fromkeys(problem.curves, min(level, top))

    if target is not None:
        return problem.result(_smallest(knob, problem, target, top, "uniform"), "uniform", target=target)
    steps = [top * k / 1000 for k in range(1001)]
    ok = [lv for lv in steps if sum(max(problem.damage_at(n, lv), 0.0) for n in problem.curves) <= budget + 1e-9]
    return problem.result(knob(max(ok)), "uniform", budget=budget)


def equal_tolerance(points: Iterable[Any], *, objective: str = "sparsity", budget: float | None = None,
                    target: float | None = None, sizes: Mapping[str, int] | None = None, metric: str = "top1",
                    higher_is_better: bool | None = None) -> PlanResult:
    """Today's rule: per parameter the highest measured level whose own damage is within one tolerance; the
    largest tolerance whose summed damage stays within ``budget`` (the optimiser's budget, so the two compare),
    or the smallest whose choice reaches ``target``."""
    _one(budget, target)
    problem = _problem(points, objective, sizes, metric, higher_is_better)
    candidates = tolerances(problem.curves)
    if budget is not None:
        def summed(tol: float) -> float:
            return sum(max(d, 0.0) for d in choose_within(problem.curves, tol)[1].values())

        tol = max(t for t in candidates if summed(t) <= budget + 1e-9)  # tolerance 0 sums to 0
        return problem.result(choose_within(problem.curves, tol)[0], "equal-tolerance", budget=budget)
    need = _needed(problem, target)
    if _gain(problem, choose_within(problem.curves, candidates[-1])[0]) < need:
        raise ValueError(f"equal-tolerance: target {target:g} is out of reach")
    lo, hi = 0, len(candidates) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if _gain(problem, choose_within(problem.curves, candidates[mid])[0]) >= need:
            hi = mid
        else:
            lo = mid + 1
    return problem.result(choose_within(problem.curves, candidates[lo])[0], "equal-tolerance", target=target)


def _count_level(count: int, size: int) -> float:
    """A level whose ``int(level * size)`` is exactly ``count`` (as level pruning counts)."""
    return 1.0 if count >= size else (count + 0.5) / size


def global_magnitude(points: Iterable[Any], weights: Mapping[str, Any], *, target: float,
                     sizes: Mapping[str, int] | None = None, metric: str = "top1",
                     higher_is_better: bool | None = None) -> PlanResult:
    """One global |w| threshold over every planned weight (``global_unstructured(..., L1Unstructured)``):
    the smallest weights of all planned tensors together, as many as reach ``target`` overall sparsity of
    ``sizes``; each tensor's count becomes its level. ``weights``: parameter -> tensor (or array)."""
    problem = _problem(points, "sparsity", sizes, metric, higher_is_better)
    if problem.group != "element":
        raise ValueError("global magnitude pruning ranks single weights: plan the element group")
    names = list(problem.curves)
    arrays = [np.abs(_numpy(weights[n])).ravel() for n in names]
    need = math.ceil(_needed(problem, target))
    if need > sum(a.size for a in arrays):
        raise ValueError("global magnitude: the target needs more weights than the planned tensors hold")
    owner = np.concatenate([np.full(a.size, i) for i, a in enumerate(arrays)])
    order = np.argsort(np.concatenate(arrays), kind="stable")[:max(need, 0)]
    counts = np.bincount(owner[order], minlength=len(names))
    levels = {n: _count_level(int(c), a.size) for n, c, a in zip(names, counts, arrays, strict=True)}
    return problem.result(levels, "global-magnitude", target=target)


def _numpy(tensor: Any) -> np.ndarray:
    if hasattr(tensor, "detach"):
        tensor = tensor.detach().float().cpu().numpy()
    return np.asarray(tensor, dtype=np.float64)


def torch_pruning_global(points: Iterable[Any], model: Any, example_inputs: Any, *, target: float,
                         objective: str = "macs", sizes: Mapping[str, int] | None = None, metric: str = "top1",
                         higher_is_better: bool | None = None) -> PlanResult:
    """Torch-Pruning's global ranking of filters: ``MetaPruner(global_pruning=True)`` with L1 group importance
    over the planned layers (the others ignored), at the smallest global ratio whose per-layer filter counts,
    read back as levels, reach ``target`` of the ``objective``. ``model`` is not changed (a copy is pruned)."""
    import torch_pruning as tp
    from torch import nn

    problem = _problem(points, objective, sizes, metric, higher_is_better)
    if problem.group != "filter":
        raise ValueError("Torch-Pruning's global ranking removes filters: plan the filter group")
    names = list(problem.curves)
    top = min(problem.max_level(n) for n in names)
    layers = (nn.modules.conv._ConvNd, nn.Linear)

    def knob(ratio: float) -> dict[str, float]:
        clone = copy.deepcopy(model).eval()
        owners = {n: clone.get_submodule(n.rpartition(".")[0]) for n in names}
        before = {n: m.weight.shape[0] for n, m in owners.items()}
        planned = set(owners.values())
        ignored = [m for m in clone.modules() if isinstance(m, layers) and m not in planned]
        if ratio > 0:
            pruner = tp.pruner.MetaPruner(clone, example_inputs, importance=tp.importance.GroupMagnitudeImportance(p=1),
                                          global_pruning=True, pruning_ratio=ratio, max_pruning_ratio=top,
                                          ignored_layers=ignored)
            pruner.step()
        return {n: _count_level(before[n] - owners[n].weight.shape[0], before[n]) for n in names}

    return problem.result(_smallest(knob, problem, target, top, "torch-pruning global", rounds=10),
                          "torch-pruning-global", target=target)


#: Every baseline by the name its PlanResult carries (``method``).
BASELINES: dict[str, Callable[..., PlanResult]] = {
    "uniform": uniform, "equal-tolerance": equal_tolerance, "global-magnitude": global_magnitude,
    "torch-pruning-global": torch_pruning_global,
}
