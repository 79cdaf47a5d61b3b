"""``prunescope prune``: prune a trained model per a Distiller schedule while fine-tuning it."""

from __future__ import annotations

import argparse
from pathlib import Path

from api.commands.common import (
    add_dataset_args,
    add_model_args,
    dataset_options,
    load_cli_model,
    load_split,
    resolve_spec_defaults,
    spec_option,
)

SPEC = "PruneSpec"  # the options' defaults and choices are this job spec's


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prune",
        help="prune a model with a Distiller YAML schedule, fine-tuning as it goes",
        description="Run SCHEDULE (Distiller YAML: pruners, lr_schedulers, policies) on MODEL for EPOCHS "
        "epochs of fine-tuning on DATASET, print per-epoch metrics and the final sparsity summary, and "
        "save a checkpoint with masks, schedule and metrics. --thin then removes pruned filters/channels.",
    )
    add_model_args(p)  # --checkpoint, --dataset, --epochs and --out: required unless --dry-run (checked in run)
    add_dataset_args(p, dataset_required=False, spec=SPEC)
    p.add_argument("--schedule", required=True, help="Distiller YAML schedule file")
    p.add_argument("--epochs", type=int, help="fine-tuning epochs (0: prune at epoch 0, no training)")
    p.add_argument("--out", help="checkpoint to write (masked model, masks, schedule, metrics)")
    spec_option(p, "--thin", SPEC, action="store_true",
                   help="physically remove all-zero filters/channels (Torch-Pruning) and report params, MACs, "
                   "CPU latency before/after; the thinned model goes to OUT with .thin before the suffix")
    spec_option(p, "--optimizer", SPEC, choices=True, help="optimizer: %(choices)s (default %(default)s)")
    spec_option(p, "--lr", SPEC, type=float, help="fine-tuning learning rate (default %(default)s)")
    spec_option(p, "--momentum", SPEC, type=float, help="SGD momentum (default %(default)s)")
    spec_option(p, "--weight-decay", SPEC, type=float, help="weight decay (default %(default)s)")
    spec_option(p, "--seed", SPEC, type=int, help="random seed (default %(default)s)")
    spec_option(p, "--latency-batch", SPEC, type=int, help="batch size for --thin latency (default %(default)s)")
    spec_option(p, "--start-epoch", SPEC, type=int,
                help="jump into the schedule: replay epochs 0..START-1 without training (their pruning, "
                "thinning and lr steps), then train EPOCHS epochs from START (default %(default)s)")
    p.add_argument("--dry-run", action="store_true",
                   help="validate the schedule against the model and walk it without training: per epoch, each "
                   "parameter's target sparsity, the lr, regularizers and thinning (EPOCHS 0 or omitted: the whole "
                   "schedule); needs only --model and --schedule (random weights without --checkpoint)")
    p.set_defaults(handler=run)


def print_renames(renames: list[tuple[str, str]]) -> None:
    """Show how schedule names (Distiller's DataParallel ``module.`` prefixes) map to the model's."""
    if renames:
        print(f"parameter names resolved ({len(renames)}; DataParallel prefixes removed):")
        for old, new in renames:
            print(f"  {old} -> {new}")


def _fmt(level: float | None) -> str:
    return "random" if level is None else f"{level:.4f}"


def print_preview(preview: list[dict], schedule: object) -> None:
    """Print the epochs where something happens (pruning, regularization, thinning, an lr change)."""
    pruners = schedule.pruners  # type: ignore[attr-defined]
    last_lr = None
    for entry in preview:
        names = [n for n in entry["pruners"]]
        changed_lr = entry["lr"] != last_lr
        last_lr = entry["lr"]
        if not (names or entry["regularizers"] or entry["thinning"] or changed_lr):
            continue
        shown = ", ".join(f"{n}" + (f" -> {entry['pruners'][n]:.4f}"
                                    if pruners[n].cls.endswith(("AGP", "AutomatedGradualPruner")) else "")
                          for n in names)
        print(f"  epoch {entry['epoch']:>3}: {shown or '-'}  (lr {entry['lr']:.6g})")
        for n in names:
            params = entry["params"][n]
            levels = {_fmt(entry["sparsity"][w]) for w in params}
            if len(levels) == 1:
                print(f"      {n} ({pruners[n].cls}) {levels.pop()}: {', '.join(params)}")
            else:
                shown = ", ".join(f"{w} {_fmt(entry['sparsity'][w])}" for w in params)
                print(f"      {n} ({pruners[n].cls}): {shown}")
        if entry["regularizers"]:
            print(f"      regularizers: {', '.join(entry['regularizers'])}")
        for ext in entry["thinning"]:
            print(f"      thinning ({ext}): dead filters/channels are removed at the start of this epoch")
        for note in entry["notes"]:
            print(f"      note: {note}")


def _dry_run(args: argparse.Namespace, schedule: object) -> None:
    """Validate and walk the schedule on the model's own weights (random without --checkpoint): the torch-free
    walker, given the weights so that threshold pruners show what they would zero."""
    import torch

    from pruning_core.checkpoint import load_model
    from pruning_core.preview import preview
    from pruning_core.schedule import check_extensions, model_parameter_names, resolve_names

    bundle = load_split(args, "test") if args.dataset else None
    model = load_cli_model(args, bundle) if bundle is not None else load_model(args.checkpoint, args.model)
    names, prunable = model_parameter_names(model)
    resolved, _ = resolve_names(schedule, names, prunable)  # type: ignore[arg-type]
    print(f"schedule OK: {len(resolved.pruners)} pruner(s), {len(resolved.regularizers)} regularizer(s), "
          f"{len(resolved.extensions)} extension(s), {len(resolved.policies)} policies")
    print_renames(resolved.renames)
    if resolved.extensions and bundle is None:
        print("note: extensions' arch and dataset are checked against the job's when --dataset is given")
    elif resolved.extensions:
        for note in check_extensions(resolved, arch=args.model, dataset=args.dataset, input_shape=bundle.input_shape,
                                     num_classes=bundle.num_classes):
            print(f"note: {note}")
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    with torch.no_grad():
        epochs = preview(schedule, shapes, lr=args.lr, epochs=args.epochs or None,  # type: ignore[arg-type]
                         weights=model.get_parameter, prunable=prunable)
    print_preview(epochs, resolved)


def thin_path(out: str) -> Path:
    """Where the thinned checkpoint goes: ``p.pt`` -> ``p.thin.pt``."""
    path = Path(out)
    return path.with_name(f"{path.stem}.thin{path.suffix or '.pt'}")


def run(args: argparse.Namespace) -> int:
    resolve_spec_defaults(args)
    if (args.epochs or 0) < 0 or args.start_epoch < 0:
        raise ValueError("--epochs and --start-epoch must be >= 0")
    missing = [f"--{name}" for name in ("checkpoint", "dataset", "epochs", "out") if getattr(args, name) is None]
    if missing and not args.dry_run:
        raise ValueError(f"prune needs {', '.join(missing)} to train (only --dry-run runs without them)")
    from tqdm.auto import tqdm

    from pruning_core.checkpoint import save_checkpoint
    from pruning_core.datasets import make_loader
    from pruning_core.metrics import format_summary
    from pruning_core.prune_job import PruneEpoch, run_prune
    from pruning_core.schedule import dump_schedule, load_schedule

    schedule = load_schedule(args.schedule)
    if args.dry_run:
        _dry_run(args, schedule)
        return 0
    test_set = load_split(args, "test")
    model = load_cli_model(args, test_set)
    train_set = load_split(args, "train")
    header = (f"{'epoch':>5} {'lr':>9} {'train loss':>10} {'top1':>7} {'top5':>7} {'loss':>7} {'sparsity':>8}"
              f" {'reg loss':>9}")

    def show(e: PruneEpoch) -> None:
        if e.epoch == args.start_epoch:
            tqdm.write(header)
        reg = f"{e.regularization_loss:>9.4f}" if e.regularization_loss is not None else f"{'-':>9}"
        tqdm.write(f"{e.epoch:>5} {e.lr:>9.5f} {e.train_loss or 0:>10.4f} {e.top1:>7.2f} {e.top5:>7.2f} "
                   f"{e.loss:>7.4f} {100 * e.sparsity:>7.2f}% {reg}")
        if e.thinned is not None:
            tqdm.write(f"      thinned at the start of epoch {e.epoch}: removed {sum(e.thinned.values())} channels "
                       f"in {len(e.thinned)} layers")

    result = run_prune(
        model,
        make_loader(train_set, batch_size=args.batch_size, shuffle=True, seed=args.seed),
        make_loader(test_set, batch_size=args.batch_size),
        schedule,
        args.epochs,
        lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay, optimizer=args.optimizer,
        thin=args.thin, latency_batch=args.latency_batch, on_epoch=show, device=args.device, seed=args.seed,
        start_epoch=args.start_epoch, arch=args.model, dataset=args.dataset,
    )
    print_renames(result.renames)
    for note in result.warnings:
        print(f"warning: {note}")
    print(format_summary(result.summary))
    b, f = result.baseline, result.final
    print(f"before: top1 {b.top1:.2f}%  top5 {b.top5:.2f}%  loss {b.loss:.4f}")
    print(f"after:  top1 {f.top1:.2f}%  top5 {f.top5:.2f}%  loss {f.loss:.4f}  "
          f"(top1 {f.top1 - b.top1:+.2f} points)  weight sparsity {100 * result.sparsity:.2f}%")
    metadata = {"dataset": args.dataset, "dataset_options": dataset_options(args), "epochs": args.epochs,
                "start_epoch": args.start_epoch, "schedule": dump_schedule(schedule), "prune": result.metrics(),
                "metrics": {"top1": f.top1, "top5": f.top5, "loss": f.loss}}
    if result.schedule_thinning:  # the model itself was thinned by the schedule: record how, to rebuild it
        metadata["thinning_history"] = result.thinning_history()
    save_checkpoint(args.out, model, arch=args.model, masks=result.masks, metadata=metadata)
    print(f"checkpoint: {args.out}")
    if result.thinning is not None and result.thinned is not None:
        t = result.thinning
        lat_b, lat_a = t.before.latency_ms or 0.0, t.after.latency_ms or 0.0
        print(f"thinning: removed {sum(t.removed.values())} channels in {len(t.removed)} layers "
              f"(max output difference {t.max_abs_diff:.2e})")
        print(f"  params  {t.before.params:>12,} -> {t.after.params:>12,}  ({t.after.params / t.before.params:.3f}x)")
        print(f"  MACs    {t.before.macs:>12,} -> {t.after.macs:>12,}  ({t.macs_ratio:.3f}x)")
        print(f"  latency {lat_b:>10.3f}ms -> {lat_a:>10.3f}ms  ({t.latency_ratio or 0:.3f}x, median, CPU, "
              f"batch {args.latency_batch})")
        print(f"  thinned: top1 {result.thinned.top1:.2f}%  top5 {result.thinned.top5:.2f}%  "
              f"loss {result.thinned.loss:.4f}")
        path = thin_path(args.out)
        save_checkpoint(path, result.thinned_model, arch=args.model,
                        metadata={**metadata, "thinning_history": t.history,
                                  "metrics": {"top1": result.thinned.top1, "top5": result.thinned.top5,
                                              "loss": result.thinned.loss}})
        print(f"thinned checkpoint: {path} (rebuild with pruning_core.thinning.rebuild_thinned)")
    return 0
