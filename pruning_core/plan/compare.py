"""The optimiser's plan beside the baselines at the same goal: what POST /plans answers (predicted, torch-free)
and what a plan job measures (:func:`measure_all`, with the baselines that need the weights)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .baselines import equal_tolerance, global_magnitude, torch_pruning_global, uniform
from .optimise import optimise
from .result import PlanResult


@dataclass(frozen=True)
class Goal:
    """What a plan optimises and its bound, as :func:`~pruning_core.plan.optimise.optimise` takes them."""

    objective: str = "sparsity"
    budget: float | None = None
    target: float | None = None
    metric: str = "top1"
    higher_is_better: bool | None = None
    interpolate: int = 0

    def solve(self, points: Iterable[Any], sizes: Mapping[str, int] | None = None) -> PlanResult:
        return optimise(points, objective=self.objective, budget=self.budget, target=self.target, sizes=sizes,
                        metric=self.metric, higher_is_better=self.higher_is_better, interpolate=self.interpolate)


def predicted_baselines(points: list[Any], goal: Goal, sizes: Mapping[str, int] | None) -> dict[str, PlanResult | str]:
    """Uniform sparsity and the equal-tolerance rule at ``goal`` (or why one has no plan there), torch-free."""
    out: dict[str, PlanResult | str] = {}
    for name, method in (("uniform", uniform), ("equal-tolerance", equal_tolerance)):
        try:
            out[name] = method(points, objective=goal.objective, budget=goal.budget, target=goal.target,
                               sizes=sizes, metric=goal.metric, higher_is_better=goal.higher_is_better)
        except ValueError as exc:
            out[name] = str(exc)
    return out


def weight_baseline(points: list[Any], goal: Goal, model: Any, example: Any,
                    sizes: Mapping[str, int] | None) -> tuple[str, PlanResult | str] | None:
    """The global baseline that needs the weights, where the goal is a target it can reach: global magnitude
    pruning (element group, sparsity target) or Torch-Pruning's global filter ranking (filter group)."""
    if goal.target is None:
        return None
    group = {getattr(p, "group", "element") for p in points}
    try:
        if group == {"element"} and goal.objective == "sparsity":
            weights = dict(model.named_parameters())
            return "global-magnitude", global_magnitude(points, weights, target=goal.target, sizes=sizes,
                                                        metric=goal.metric, higher_is_better=goal.higher_is_better)
        if group == {"filter"} and goal.objective in ("sparsity", "macs"):
            return "torch-pruning-global", torch_pruning_global(
                points, model, example, target=goal.target, objective=goal.objective, sizes=sizes,
                metric=goal.metric, higher_is_better=goal.higher_is_better)
    except ValueError as exc:
        return ("global-magnitude" if group == {"element"} else "torch-pruning-global"), str(exc)
    return None


def as_json(result: PlanResult | str) -> dict[str, Any]:
    """A plan or a baseline's refusal as the API and a plan job's result store it."""
    return {"error": result} if isinstance(result, str) else result.to_dict()
