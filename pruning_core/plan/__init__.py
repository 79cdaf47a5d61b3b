"""Plans: a sensitivity analysis turned into per-parameter sparsities and a pruning schedule.

- :mod:`.rule`: today's rule, every parameter within one tolerance of its own drop (``choose_levels``,
  ``plan_for_target``);
- :mod:`.optimise`: the levels that remove the most under a budget on the summed predicted damage, or reach
  a target with the least (a multiple-choice knapsack, solved exactly on a damage grid);
- :mod:`.baselines`: uniform sparsity, the equal-tolerance rule, global magnitude pruning and Torch-Pruning's
  global ranking, returned as the optimiser's :class:`PlanResult`;
- :mod:`.verify` (needs torch, so imported by name, never here): a plan measured as a whole, and the
  correction loop;
- :mod:`.output`: the Distiller schedule, the text table and the API's answer.

Everything importable from here is torch-free: the API plans in its own process.
"""

from .base import Plan, damage_curves, damage_unit, overall_sparsity, planned_sizes, points_group, sizes_from_shapes
from .baselines import BASELINES, equal_tolerance, global_magnitude, torch_pruning_global, uniform
from .optimise import GRID, Solution, optimise, solve, solve_budget, solve_target
from .output import format_plan, plan_answer, plan_schedule
from .problem import OBJECTIVES, Option, Problem, build_problem
from .result import PlanResult, PlanRound
from .rule import choose_levels, choose_within, plan_for_target, tolerances

__all__ = [
    "BASELINES", "GRID", "OBJECTIVES", "Option", "Plan", "PlanResult", "PlanRound", "Problem", "Solution",
    "build_problem", "choose_levels", "choose_within", "damage_curves", "damage_unit", "equal_tolerance",
    "format_plan", "global_magnitude", "optimise", "overall_sparsity", "plan_answer", "plan_for_target",
    "planned_sizes",
    "plan_schedule", "points_group", "sizes_from_shapes", "solve", "solve_budget", "solve_target",
    "tolerances", "torch_pruning_global", "uniform",
]
