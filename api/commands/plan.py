"""``prunescope plan``: turn a sensitivity CSV into a Distiller pruning schedule."""

from __future__ import annotations

import argparse
from typing import Any

from api.commands.common import resolve_spec_defaults, spec_option

SPEC = "PlanRequest"  # the options' defaults and choices are POST /plans's


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        help="choose per-layer sparsities from a sensitivity CSV and write a schedule",
        description="For each parameter in the sensitivity result, pick the highest measured sparsity whose "
        "top1 drop (vs its 0.0 row) or loss rise is within the tolerance, and write a Distiller YAML "
        "schedule (AGP by default) for `prunescope prune`. With --target-sparsity, the smallest tolerance "
        "that reaches that overall weight sparsity is found by bisection (needs --model for layer sizes).",
    )
    p.add_argument("--sensitivity", required=True, help="sensitivity CSV (parameter,sparsity,top1,top5,loss)")
    p.add_argument("--max-drop", type=float, default=None,
                   help="tolerance: top1 drop in points (--metric top1) or loss rise (--metric loss)")
    spec_option(p, "--metric", SPEC,
                help="what the tolerance measures: a metric of the CSV, top1, top5 or loss (default %(default)s)")
    p.add_argument("--target-sparsity", type=float, default=None,
                   help="instead of --max-drop: reach this overall weight sparsity (0..1) with the least damage")
    spec_option(p, "--objective", SPEC, choices=True,
                help="optimise instead of the equal-tolerance rule: %(choices)s removed, under --budget (the "
                     "summed predicted damage) or reaching --target (a fraction) with the least; the baselines "
                     "(uniform, equal-tolerance) are printed beside it")
    p.add_argument("--budget", type=float, default=None, help="with --objective: the summed predicted damage allowed "
                                                              "(top1 points, or loss rise, over all layers)")
    p.add_argument("--target", type=float, default=None,
                   help="with --objective: the fraction (0..1) of weights/MACs/latency to remove")
    spec_option(p, "--interpolate", SPEC, type=int, help="with --objective: levels interpolated inside each measured "
                                                         "gap (default %(default)s)")
    p.add_argument("--model", default=None, help="architecture, for layer sizes (needed by --target-sparsity; "
                                                 "with --objective, every prunable weight then counts)")
    p.add_argument("-o", "--out", required=True, help="schedule YAML to write")
    spec_option(p, "--epochs", SPEC, type=int, help="epochs the schedule is written for (default %(default)s)")
    spec_option(p, "--one-shot", SPEC, action="store_true", help="prune everything at epoch 0, then fine-tune")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    resolve_spec_defaults(args)
    if args.objective is not None:
        return run_optimised(args)
    if args.budget is not None or args.target is not None:
        raise ValueError("--budget and --target need --objective (sparsity, macs or latency)")
    if (args.max_drop is None) == (args.target_sparsity is None):
        raise ValueError("give exactly one of --max-drop and --target-sparsity (or --objective with --budget or "
                         "--target)")
    from pruning_core.plan import choose_levels, plan_for_target
    from pruning_core.sensitivity_io import read_csv

    points = read_csv(args.sensitivity)
    sizes = _sizes(args.model, points)
    if args.target_sparsity is not None:
        if sizes is None:
            raise ValueError("--target-sparsity needs --model (the layer sizes weigh the overall sparsity)")
        plan = plan_for_target(points, args.target_sparsity, sizes, args.metric)
    else:
        plan = choose_levels(points, args.max_drop, args.metric, sizes)
    _write(args, plan)
    return _done(args)


def _sizes(model: str | None, points: list[Any]) -> dict[str, int] | None:
    """The model's prunable weights and the planned parameters, sized as the service sizes them."""
    if not model:
        return None
    from pruning_core.metrics import prunable_parameters
    from pruning_core.models import create_model
    from pruning_core.plan import planned_sizes

    built = create_model(model)
    return planned_sizes({n: tuple(p.shape) for n, p in built.named_parameters()},
                         [n for n, _ in prunable_parameters(built)], points)


def _write(args: argparse.Namespace, plan: Any) -> None:
    """Write ``plan``'s schedule to ``--out`` with the plan's table as a comment header, and print the table."""
    from pruning_core.plan import format_plan, plan_schedule
    from pruning_core.schedule import dump_schedule

    schedule = plan_schedule(plan, epochs=args.epochs, one_shot=args.one_shot)
    header = "".join(f"# {line}\n" for line in format_plan(plan).splitlines())
    with open(args.out, "w") as fh:
        fh.write(header + dump_schedule(schedule))
    print(format_plan(plan))


def _done(args: argparse.Namespace) -> int:
    print(f"schedule: {args.out} ({'one-shot' if args.one_shot else 'AGP'}, {args.epochs} epochs)")
    return 0


def run_optimised(args: argparse.Namespace) -> int:
    """``--objective``: the optimiser's plan (predicted) beside the baselines that need no weights, and its
    schedule; the same answer as POST /plans with an objective."""
    from api.schemas import PlanGoal
    from pruning_core.plan.compare import predicted_baselines
    from pruning_core.sensitivity_io import read_csv

    if args.max_drop is not None or args.target_sparsity is not None:
        raise ValueError("--objective takes --budget or --target, not --max-drop or --target-sparsity")
    request = PlanGoal(objective=args.objective, budget=args.budget, target=args.target, metric=args.metric,
                       interpolate=args.interpolate, epochs=args.epochs, one_shot=args.one_shot)
    request.check_goal()
    goal = request.goal()
    points = read_csv(args.sensitivity)
    sizes = _sizes(args.model, points)
    plan = goal.solve(points, sizes)
    _write(args, plan)
    print(f"\n{'method':<16} {'predicted drop':>14} {'overall sparsity':>16}")
    for name, result in [("optimal", plan), *predicted_baselines(points, goal, sizes).items()]:
        if isinstance(result, str):
            print(f"{name:<16} {'no plan: ' + result}")
        else:
            print(f"{name:<16} {result.predicted_drop:>14.3f} {result.overall_sparsity:>16.3f}")
    return _done(args)
