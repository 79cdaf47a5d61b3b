"""A plan as the optimiser, the baselines and the verification return it (one type for all methods).

:class:`PlanResult` is a :class:`~pruning_core.plan.base.Plan`, so :func:`~pruning_core.plan.output.plan_schedule`
and :func:`~pruning_core.plan.output.format_plan` write it as they write the rule's plans.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .base import Plan


@dataclass
class PlanRound:
    """One round of the correction loop: the budget solved for, what it predicted and what was measured."""

    index: int
    budget: float
    predicted_drop: float
    measured_drop: float | None
    levels: dict[str, float]


@dataclass
class PlanResult(Plan):
    """Chosen levels, what the method optimised, the predicted damage and, once verified, the measured one.

    ``tolerance`` is the largest per-parameter damage among the choices (what the rule would have needed).
    ``predicted_drop`` is the sum of the per-parameter damages (negative ones, evaluation noise, count as 0);
    ``gain`` what the choice removes in the objective's units (weights, MACs per sample, ms), ``total`` the
    dense model's amount of them. ``bound``/``gap`` (the optimiser only): the Lagrangian (LP) bound and how
    far the returned choice can be from the optimum. ``measured_drop`` and ``measured`` come from
    :func:`pruning_core.plan.verify.verify` (every chosen layer pruned at once, one evaluation).
    """

    method: str = "optimal"
    objective: str = "sparsity"
    budget: float | None = None
    target: float | None = None
    predicted_drop: float = 0.0
    gain: float = 0.0
    total: float = 0.0
    macs_ratio: float | None = None  # predicted MACs left / dense, where the points carry MACs
    latency_ratio: float | None = None  # predicted latency / dense, where the points carry latency
    interpolated: list[str] = field(default_factory=list)  # parameters whose level was not measured
    bound: float | None = None
    gap: float | None = None
    measured_drop: float | None = None
    measured: dict[str, Any] | None = None
    rounds: list[PlanRound] = field(default_factory=list)

    @property
    def met(self) -> bool | None:
        """Whether the measured drop is within the budget (None before verification or without a budget)."""
        if self.measured_drop is None or self.budget is None:
            return None
        return self.measured_drop <= self.budget + 1e-9

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["met"] = self.met
        return out
