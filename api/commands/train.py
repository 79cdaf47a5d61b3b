"""``prunescope train``: train a model by name on a dataset by name and save a checkpoint."""

from __future__ import annotations

import argparse
import time

from api.commands.common import (
    Lazy,
    SpecChoices,
    add_dataset_args,
    add_model_args,
    dataset_options,
    load_cli_model,
    load_split,
    resolve_spec_defaults,
    spec_option,
)


def _lr_default() -> str:
    """TrainSpec's learning rate per optimizer, for --help."""
    from api.schemas import TrainSpec

    return ", ".join(f"{TrainSpec.default_lr(o):g} for {o}" for o in SpecChoices("TrainSpec", "optimizer"))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model and save a checkpoint",
        description="Train MODEL on the train split of DATASET, evaluate on the test split after each "
        "epoch, and save a checkpoint with the final metrics.",
    )
    add_model_args(p)
    add_dataset_args(p, spec="TrainSpec")
    spec_option(p, "--epochs", "TrainSpec", type=int, help="training epochs (default %(default)s)")
    spec_option(p, "--optimizer", "TrainSpec", choices=True, help="optimizer: %(choices)s (default %(default)s)")
    lr = p.add_argument("--lr", type=float, default=None, help="learning rate (default %(lr_default)s)")
    lr.lr_default = Lazy(_lr_default)  # type: ignore[attr-defined]  # shown by --help
    spec_option(p, "--momentum", "TrainSpec", type=float, help="SGD momentum (default %(default)s)")
    spec_option(p, "--weight-decay", "TrainSpec", type=float, help="weight decay (default %(default)s)")
    spec_option(p, "--seed", "TrainSpec", type=int,
                help="random seed; the same seed gives the same weights (default %(default)s)")
    p.add_argument("--out", required=True, help="checkpoint file to write, e.g. ck.pt")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    resolve_spec_defaults(args)
    if args.epochs < 1:
        raise ValueError("--epochs must be at least 1")
    from api.schemas import TrainSpec
    from pruning_core.checkpoint import save_checkpoint
    from pruning_core.datasets import make_loader
    from pruning_core.training import train

    train_set, test_set = load_split(args, "train"), load_split(args, "test")
    model = load_cli_model(args, train_set)
    lr = args.lr if args.lr is not None else TrainSpec.default_lr(args.optimizer)
    start = time.perf_counter()
    history = train(
        model,
        make_loader(train_set, batch_size=args.batch_size, shuffle=True, seed=args.seed),
        epochs=args.epochs,
        optimizer=args.optimizer,
        lr=lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        eval_loader=make_loader(test_set, batch_size=args.batch_size),
        seed=args.seed,
        device=args.device,
    )
    elapsed = time.perf_counter() - start
    print(f"{'epoch':>5} {'lr':>9} {'train loss':>10} {'top1':>7} {'top5':>7} {'loss':>7}")
    for m in history:
        print(f"{m.epoch:>5} {m.lr:>9.5f} {m.train_loss:>10.4f} {m.top1:>7.2f} {m.top5:>7.2f} {m.loss:>7.4f}")
    final = history[-1]
    save_checkpoint(
        args.out,
        model,
        arch=args.model,
        metadata={
            "dataset": args.dataset,
            "dataset_options": dataset_options(args),
            "epochs": args.epochs,
            "metrics": {"top1": final.top1, "top5": final.top5, "loss": final.loss},
            "train_seconds": round(elapsed, 2),
        },
    )
    print(f"test top1 {final.top1:.2f}%  top5 {final.top5:.2f}%  loss {final.loss:.4f}  ({elapsed:.1f} s)")
    print(f"checkpoint: {args.out}")
    return 0
