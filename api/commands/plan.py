"""``prunescope plan``: turn a sensitivity CSV into a Distiller pruning schedule."""

from __future__ import annotations

import argparse

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
    p.add_argument("--model", default=None, help="architecture, for layer sizes (needed by --target-sparsity)")
    p.add_argument("-o", "--out", required=True, help="schedule YAML to write")
    spec_option(p, "--epochs", SPEC, type=int, help="epochs the schedule is written for (default %(default)s)")
    spec_option(p, "--one-shot", SPEC, action="store_true", help="prune everything at epoch 0, then fine-tune")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    resolve_spec_defaults(args)
    if (args.max_drop is None) == (args.target_sparsity is None):
        raise ValueError("give exactly one of --max-drop and --target-sparsity")
    from pruning_core.plan import choose_levels, format_plan, plan_for_target, plan_schedule
    from pruning_core.schedule import dump_schedule
    from pruning_core.sensitivity_io import read_csv

    points = read_csv(args.sensitivity)
    sizes = None
    if args.model:
        from pruning_core.metrics import prunable_parameters
        from pruning_core.models import create_model

        sizes = {n: p.numel() for n, p in prunable_parameters(create_model(args.model))}
    if args.target_sparsity is not None:
        if sizes is None:
            raise ValueError("--target-sparsity needs --model (the layer sizes weigh the overall sparsity)")
        plan = plan_for_target(points, args.target_sparsity, sizes, args.metric)
    else:
        plan = choose_levels(points, args.max_drop, args.metric, sizes)
    schedule = plan_schedule(plan, epochs=args.epochs, one_shot=args.one_shot)
    header = "".join(f"# {line}\n" for line in format_plan(plan).splitlines())
    with open(args.out, "w") as fh:
        fh.write(header + dump_schedule(schedule))
    print(format_plan(plan))
    print(f"schedule: {args.out} ({'one-shot' if args.one_shot else 'AGP'}, {args.epochs} epochs)")
    return 0
