"""``prunescope prune``: prune a trained model per a Distiller schedule while fine-tuning it."""

from __future__ import annotations

import argparse
from pathlib import Path

from api.commands.common import add_dataset_args, add_model_args, dataset_options, load_cli_model, load_split


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prune",
        help="prune a model with a Distiller YAML schedule, fine-tuning as it goes",
        description="Run SCHEDULE (Distiller YAML: pruners, lr_schedulers, policies) on MODEL for EPOCHS "
        "epochs of fine-tuning on DATASET, print per-epoch metrics and the final sparsity summary, and "
        "save a checkpoint with masks, schedule and metrics. --thin then removes pruned filters/channels.",
    )
    add_model_args(p, checkpoint_required=True)
    add_dataset_args(p)
    p.add_argument("--schedule", required=True, help="Distiller YAML schedule file")
    p.add_argument("--epochs", type=int, required=True, help="fine-tuning epochs (0: prune at epoch 0, no training)")
    p.add_argument("--out", required=True, help="checkpoint to write (masked model, masks, schedule, metrics)")
    p.add_argument("--thin", action="store_true",
                   help="physically remove all-zero filters/channels (Torch-Pruning) and report params, MACs, "
                   "CPU latency before/after; the thinned model goes to OUT with .thin before the suffix")
    p.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default="sgd", help="optimizer (default sgd)")
    p.add_argument("--lr", type=float, default=0.01, help="fine-tuning learning rate (default 0.01)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="weight decay (default 1e-4)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--latency-batch", type=int, default=1, help="batch size for --thin latency (default 1)")
    p.add_argument("--dry-run", action="store_true",
                   help="validate the schedule against the model and print what each epoch prunes; no training")
    p.set_defaults(handler=run)


def _dry_run(model: object, schedule: object, epochs: int) -> None:
    from pruning_core.scheduler import CompressionScheduler

    compression = CompressionScheduler(model, schedule)  # type: ignore[arg-type]
    print(f"schedule OK: {len(schedule.pruners)} pruner(s), {len(schedule.policies)} policies")  # type: ignore[attr-defined]
    for epoch in range(epochs):
        names = [p.instance_name for p in schedule.policies if epoch in p.active_epochs()]  # type: ignore[attr-defined]
        if names:
            targets = compression.target_sparsities(epoch)
            shown = ", ".join(f"{n}" + (f" -> {targets[n]:.4f}" if n in targets else "") for n in names)
            print(f"  epoch {epoch:>3}: {shown}")


def thin_path(out: str) -> Path:
    """Where the thinned checkpoint goes: ``p.pt`` -> ``p.thin.pt``."""
    path = Path(out)
    return path.with_name(f"{path.stem}.thin{path.suffix or '.pt'}")


def run(args: argparse.Namespace) -> int:
    if args.epochs < 0:
        raise ValueError("--epochs must be >= 0")
    from pruning_core.checkpoint import save_checkpoint
    from tqdm.auto import tqdm

    from pruning_core.datasets import make_loader
    from pruning_core.metrics import format_summary
    from pruning_core.prune_job import PruneEpoch, run_prune
    from pruning_core.schedule import dump_schedule, load_schedule

    schedule = load_schedule(args.schedule)
    model = load_cli_model(args)
    if args.dry_run:
        _dry_run(model, schedule, args.epochs)
        return 0
    train_set, test_set = load_split(args, "train"), load_split(args, "test")
    header = f"{'epoch':>5} {'lr':>9} {'train loss':>10} {'top1':>7} {'top5':>7} {'loss':>7} {'sparsity':>8}"

    def show(e: PruneEpoch) -> None:
        if e.epoch == 0:
            tqdm.write(header)
        tqdm.write(f"{e.epoch:>5} {e.lr:>9.5f} {e.train_loss or 0:>10.4f} {e.top1:>7.2f} {e.top5:>7.2f} "
                   f"{e.loss:>7.4f} {100 * e.sparsity:>7.2f}%")

    result = run_prune(
        model,
        make_loader(train_set, batch_size=args.batch_size, shuffle=True, seed=args.seed),
        make_loader(test_set, batch_size=args.batch_size),
        schedule,
        args.epochs,
        lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay, optimizer=args.optimizer,
        thin=args.thin, latency_batch=args.latency_batch, on_epoch=show, device=args.device, seed=args.seed,
    )
    for note in result.warnings:
        print(f"warning: {note}")
    print(format_summary(result.summary))
    b, f = result.baseline, result.final
    print(f"before: top1 {b.top1:.2f}%  top5 {b.top5:.2f}%  loss {b.loss:.4f}")
    print(f"after:  top1 {f.top1:.2f}%  top5 {f.top5:.2f}%  loss {f.loss:.4f}  "
          f"(top1 {f.top1 - b.top1:+.2f} points)  weight sparsity {100 * result.sparsity:.2f}%")
    metadata = {"dataset": args.dataset, "dataset_options": dataset_options(args), "epochs": args.epochs,
                "schedule": dump_schedule(schedule), "prune": result.metrics(),
                "metrics": {"top1": f.top1, "top5": f.top5, "loss": f.loss}}
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
