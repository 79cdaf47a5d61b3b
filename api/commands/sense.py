"""``prunescope sense``: sensitivity analysis of a model on a dataset, as a table and files."""

from __future__ import annotations

import argparse

from api.commands.common import (
    add_dataset_args,
    add_model_args,
    load_cli_model,
    load_split,
    resolve_spec_defaults,
    spec_option,
)
from pruning_core.points import POINT_FIELDS, metric_names, metric_value

SPEC = "SensitivitySpec"  # the options' defaults and choices are this job spec's


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sense",
        help="measure how accuracy falls as each layer is pruned",
        description="Prune one parameter at a time from the trained model to each sparsity level, evaluate "
        "once (no fine-tuning) and report top1/top5/loss per (parameter, level), as Distiller's "
        "sensitivity analysis. Every point starts from the trained weights.",
    )
    add_model_args(p)
    add_dataset_args(p)
    spec_option(p, "--split", SPEC, choices=True, help="split to evaluate on: %(choices)s (default %(default)s)")
    spec_option(p, "--group", SPEC, choices=True, help="what is pruned: single weights (element), whole filters or "
                "whole input channels: %(choices)s (default %(default)s)")
    spec_option(p, "--levels", SPEC, help="sparsity levels: start:stop:step with stop excluded, or a list 0,0.5,0.9 "
                "(default %(default)s)")
    p.add_argument("--params", nargs="+", metavar="GLOB",
                   help="parameter names or globs (layer1.*.conv1.weight); default every conv and linear weight")
    p.add_argument("--csv", help="write Distiller's CSV parameter,sparsity,top1,top5,loss here")
    p.add_argument("--json", help="write every point field (intervals, nnz, MACs, flags) and skipped params here")
    p.add_argument("--html", help="write an interactive, offline plotly report here")
    spec_option(p, "--engine", SPEC, choices=True, help="%(choices)s: fast reuses unchanged activations and gives "
                "identical points; plain is the reference (default %(default)s)")
    spec_option(p, "--coupled", SPEC, action="store_true",
                   help="filter/channel groups: also prune what physical removal would remove (BatchNorm, "
                   "next layers' inputs, channels tied by residual adds), via Torch-Pruning's dependency graph")
    p.add_argument("--samples", type=int, help="quick scan: evaluate a fixed random subset of N samples (seeded)")
    spec_option(p, "--seed", SPEC, type=int, help="seed of the --samples subset (default %(default)s)")
    p.add_argument("--early-stop", type=float, metavar="TOP1",
                   help="once a parameter's top1 (%%) falls below TOP1, record its higher levels as not measured")
    spec_option(p, "--latency", SPEC, action="store_true",
                   help="filter/channel groups: also time each point's model physically thinned with Torch-Pruning "
                   "(fastest of interleaved rounds, ms); slower, most telling with --coupled")
    p.add_argument("--workers", type=int, metavar="N",
                   help="worker processes, one torch thread each, each claiming the next parameter when free "
                   "(identical points, merged in model order); default every core given to this process on a "
                   "CPU, 1 on a GPU; 1 runs in this process")
    spec_option(p, "--amp", SPEC, action="store_true",
                   help="mixed precision (autocast): faster on GPUs, points are flagged approximate")
    p.add_argument("--adaptive", type=float, metavar="TOL", dest="adaptive_tolerance",
                   help="adaptive evaluation (approximate): samples in a seeded random order, each point stops once "
                   "its top1 drop, scored against the baseline on the same samples, is known to lie within or "
                   "beyond TOL top1 points; those points record the samples they used and are flagged approximate")
    spec_option(p, "--adaptive-confidence", SPEC, type=float, metavar="C",
                help="--adaptive: confidence that a stopped point is on the right side (default %(default)s)")
    spec_option(p, "--memory-mb", SPEC, type=float, metavar="MB", dest="memory_mb",
                help="memory the sweep may hold: half for the evaluation data (image files kept decoded as uint8, "
                     "decoded once per sweep when they fit), half for the values cached at the cut "
                     "(default %(default)s)")
    p.set_defaults(handler=run)


def format_table(points: list, metric: str = "top1", fmt: str = "{:>6.2f}") -> str:
    """Parameters as rows, levels as columns; '-' for a level not measured."""
    levels = sorted({p.sparsity for p in points})
    names = list(dict.fromkeys(p.parameter for p in points))
    cell = {(p.parameter, p.sparsity): getattr(p, metric) if metric in POINT_FIELDS else metric_value(p, metric)
            for p in points}
    width = max([len("parameter")] + [len(n) for n in names])
    cells = {k: "-" if v is None else fmt.format(v).strip() for k, v in cell.items()}
    col = max([6] + [len(c) for c in cells.values()])
    lines = [f"{metric:<{width}} " + " ".join(f"{lv:>{col}.2f}" for lv in levels)]
    for name in names:
        lines.append(f"{name:<{width}} " + " ".join(f"{cells.get((name, lv), '-'):>{col}}" for lv in levels))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    resolve_spec_defaults(args)
    from pruning_core.datasets import make_loader
    from pruning_core.levels import parse_levels
    from pruning_core.parallel import analyze_parallel
    from pruning_core.sensitivity_io import write_csv, write_html, write_json

    levels = parse_levels(args.levels)
    if args.samples is not None and args.samples < 1:
        raise ValueError("--samples must be at least 1")
    if args.workers is not None and args.workers < 1:
        raise ValueError("--workers must be at least 1")
    data = load_split(args, args.split)
    model = load_cli_model(args, data)
    loader = make_loader(data, batch_size=args.batch_size)
    result = analyze_parallel(model, loader, workers=args.workers, levels=levels, params=args.params,
                              group=args.group, device=args.device, engine=args.engine, coupled=args.coupled,
                              samples=args.samples, seed=args.seed, early_stop_top1=args.early_stop, amp=args.amp,
                              latency=args.latency, progress=True, task=data.task,
                              adaptive_tolerance=args.adaptive_tolerance,
                              adaptive_confidence=args.adaptive_confidence, memory_budget_mb=args.memory_mb)
    base = result.baseline or {}
    mode = "coupled" if args.coupled else "independent"
    metric = metric_names(result.points)[0] if metric_names(result.points) else "top1"
    unpruned = metric_value(base, metric)
    shown = "n/a" if unpruned is None else f"{unpruned:.2f}{'%' if metric in ('top1', 'top5') else ''}"
    print(f"{args.model} on {args.dataset}/{args.split}: {args.group} ({mode}), engine {result.engine}, "
          f"{base.get('samples', 0)} samples, unpruned {metric} {shown}")
    if result.engine_note:
        print(f"note: {result.engine_note}")
    print(format_table(result.points, metric))
    if args.group != "element":
        print(format_table(result.points, "macs", "{:,.0f}"))
    if args.latency:
        print(format_table(result.points, "latency_ms", "{:.3f}"))
    for s in result.skipped:
        print(f"skipped {s.parameter}: {s.reason}")
    for path, writer, data in ((args.csv, write_csv, result.points), (args.json, write_json, result),
                               (args.html, write_html, result.points)):
        if path:
            print(f"wrote {writer(data, path)}")
    return 0
