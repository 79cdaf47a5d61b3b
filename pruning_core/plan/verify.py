"""A plan measured as a whole, and the loop that corrects the budget until the measurement meets it.

Sensitivity measures one layer at a time; a plan prunes them all at once, and drops do not simply add (they
compound, or cancel). :func:`verify` prunes every chosen layer together with the masks sensitivity uses
(:class:`~pruning_core.sensitivity.SensitivityAnalysis`'s, coupled or not, so a point and a plan mean the same
pruning), evaluates once, without fine-tuning, on the same data the same way, and stores the measured drop
beside the predicted one. :func:`correct` re-solves with a budget scaled by predicted / measured until the
measured drop is within the budget, recording each round. Needs torch (the rest of the package does not).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..points import metric_value
from ..sensitivity import SensitivityAnalysis
from .optimise import GRID, optimise
from .result import PlanResult, PlanRound

_STRUCTURED = ("filter", "channel")


def _analysis(plan: PlanResult, model: nn.Module, loader: DataLoader, *, coupled: bool,
              **kwargs: Any) -> SensitivityAnalysis:
    """The sensitivity machinery for the plan's parameters: its masks, its evaluation (no points measured), so a
    plan's masks and measure are the sweep's exactly."""
    names = [n for n, lv in plan.levels.items() if lv > 0] or list(plan.levels)
    return SensitivityAnalysis(model, loader, levels=[0.0], params=names, group=plan.group, engine="plain",
                               coupled=coupled, **kwargs)


def plan_masks(analysis: SensitivityAnalysis, levels: Mapping[str, float]) -> dict[str, torch.Tensor]:
    """Keep-masks of every chosen layer at its level, as sensitivity builds them (a coupled group zeroes
    its dependents too); where two layers' masks touch one tensor, both apply."""
    masks: dict[str, torch.Tensor] = {}
    for name, level in levels.items():
        if level <= 0:
            continue
        for param, mask in analysis.masks(name, level).items():
            masks[param] = masks[param] & mask if param in masks else mask
    return masks


def apply_plan(plan: PlanResult, model: nn.Module, loader: DataLoader, *, coupled: bool = False,
               **kwargs: Any) -> Any:
    """Prune ``model`` in place to ``plan`` with the masks :func:`verify` measures, and return them as a
    :class:`~pruning_core.masks.MaskSet` (``train(..., masks=...)`` keeps them zero while fine-tuning)."""
    from ..masks import MaskSet

    analysis = _analysis(plan, model, loader, coupled=coupled, **kwargs)
    analysis.restore()
    kept = MaskSet(model)
    for name, mask in plan_masks(analysis, plan.levels).items():
        kept.set(name, mask)
    return kept


def _metric(measures: Any, metric: str) -> float:
    value = metric_value(measures.as_baseline(), metric)
    if value is None:
        raise ValueError(f"the evaluation measures no {metric!r}")
    return value


def _thinned_macs_ratio(model: nn.Module, masks: Mapping[str, torch.Tensor], example: torch.Tensor) -> float:
    """MACs left / dense once the masked model is thinned (what physical pruning of the plan leaves)."""
    from ..masks import MaskSet
    from ..thinning import mask_dependents, thin

    clone = copy.deepcopy(model).cpu().float().to(memory_format=torch.contiguous_format).eval()
    kept = MaskSet(clone)
    for name, mask in masks.items():
        kept.set(name, mask.cpu())
    mask_dependents(clone, kept, example.cpu())
    return thin(clone, example.cpu().contiguous(), latency=False).macs_ratio


def verify(plan: PlanResult, model: nn.Module, loader: DataLoader, *, coupled: bool = False, macs: bool = True,
           dense: float | None = None, **kwargs: Any) -> PlanResult:
    """``plan`` measured as a whole: a copy of it with ``measured_drop`` (the metric's drop, or rise, against
    the unpruned model evaluated the same way) and ``measured`` (``dense``, ``pruned``: the metric's values;
    ``sparsity``: the zeroed fraction of the planned weights; ``macs_ratio``: MACs left after thinning, for
    structured groups when ``macs``). ``coupled`` must be what the sensitivity analysis used; ``kwargs`` go to
    :class:`~pruning_core.sensitivity.SensitivityAnalysis` (``device``, ``samples``, ``seed``, ``task``...).
    ``dense``: the unpruned model's metric from an earlier :func:`verify` on the same model, data and
    ``kwargs`` (``measured["dense"]``), so several plans of one sweep evaluate the dense model once.
    The model's weights are left as they were."""
    analysis = _analysis(plan, model, loader, coupled=coupled, **kwargs)
    try:
        masks = plan_masks(analysis, plan.levels)
        if dense is None:
            dense = _metric(analysis.evaluate(), plan.metric)
        pruned = _metric(analysis.evaluate(analysis.pruned(masks)), plan.metric) if masks else dense
    finally:
        analysis.restore()
    drop = dense - pruned if plan.higher_is_better else pruned - dense
    planned = [n for n in plan.levels if n in analysis.named]
    total = sum(analysis.named[n].numel() for n in planned)
    zeroed = sum(int((~masks[n]).sum()) for n in planned if n in masks)
    measured: dict[str, Any] = {"dense": dense, "pruned": pruned, "sparsity": zeroed / total if total else 0.0}
    if macs and plan.group in _STRUCTURED and analysis.example is not None and masks:
        measured["macs_ratio"] = _thinned_macs_ratio(analysis.model, masks, analysis.example)
    return dataclasses.replace(plan, measured_drop=drop, measured=measured, rounds=list(plan.rounds))


def correct(points: Iterable[Any], model: nn.Module, loader: DataLoader, *, budget: float,
            objective: str = "sparsity", rounds: int = 5, sizes: Mapping[str, int] | None = None,
            metric: str = "top1", higher_is_better: bool | None = None, interpolate: int = 0,
            resolution: float | None = None, grid: int = GRID, coupled: bool = False, macs: bool = True,
            **kwargs: Any) -> PlanResult:
    """The optimiser's plan under ``budget``, verified; while the measured drop exceeds the budget (and
    ``rounds`` allow), re-solved with the budget scaled by budget / measured drop (from the last plan's
    predicted drop, so it always shrinks). Every round is in ``rounds``; the result's ``budget`` is the one
    asked for, ``met`` says whether the last round meets it. ``kwargs`` as :func:`verify`."""
    points = list(points)
    history: list[PlanRound] = []
    solve_budget = budget
    plan = None
    dense = kwargs.pop("dense", None)
    for index in range(max(rounds, 1)):
        plan = optimise(points, objective=objective, budget=solve_budget, sizes=sizes, metric=metric,
                        higher_is_better=higher_is_better, interpolate=interpolate, resolution=resolution,
                        grid=grid)
        plan = verify(plan, model, loader, coupled=coupled, macs=macs, dense=dense, **kwargs)
        dense = plan.measured["dense"]  # the unpruned model is evaluated in the first round only
        history.append(PlanRound(index, solve_budget, plan.predicted_drop, plan.measured_drop, dict(plan.levels)))
        if plan.measured_drop <= budget + 1e-9 or plan.predicted_drop <= 0:
            break
        solve_budget = plan.predicted_drop * budget / plan.measured_drop * (1 - 1e-6)
    assert plan is not None
    return dataclasses.replace(plan, budget=budget, rounds=history)
