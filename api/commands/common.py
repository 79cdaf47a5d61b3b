"""Arguments shared by the commands that load a model and a dataset (train, sense, prune)."""

from __future__ import annotations

import argparse
from typing import Any


def parse_options(pairs: list[str] | None) -> dict[str, str]:
    """Turn repeated ``key=value`` options into a dict; a pair without '=' is an error."""
    options: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--dataset-opt {pair!r}: expected key=value, e.g. root=/data/cifar")
        options[key.strip()] = value.strip()
    return options


def add_model_args(parser: argparse.ArgumentParser, *, checkpoint_required: bool = False) -> None:
    parser.add_argument("--model", required=True, help="architecture name, e.g. digits-cnn, resnet20-cifar, resnet18")
    parser.add_argument(
        "--checkpoint",
        required=checkpoint_required,
        help="trained weights (a prunescope checkpoint or a state_dict file); random init if omitted",
    )


def add_dataset_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="digits, synthetic, cifar10, mnist or imagefolder")
    parser.add_argument(
        "--dataset-opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dataset option, repeatable: root=/data/cifar, n=1000, shape=3x32x32, classes=10",
    )
    parser.add_argument("--batch-size", type=int, default=256, help="evaluation/training batch size (default 256)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")


def dataset_options(args: argparse.Namespace) -> dict[str, Any]:
    """The --dataset-opt pairs; synthetic data defaults to the model's input shape and classes."""
    from pruning_core.datasets import options_for_model

    return options_for_model(args.dataset, args.model, parse_options(args.dataset_opt))


def load_split(args: argparse.Namespace, split: str) -> Any:
    """The dataset bundle of one split, as the command line describes it."""
    from pruning_core.datasets import load_dataset

    return load_dataset(args.dataset, split=split, **dataset_options(args))


def load_cli_model(args: argparse.Namespace, bundle: Any) -> Any:
    """The model by --model, with weights and masks from --checkpoint when given, sized for the
    dataset's input where the architecture depends on it (lenet-300-100 on 8x8 digits)."""
    from pruning_core.checkpoint import load_model

    return load_model(args.checkpoint, args.model, input_shape=bundle.input_shape)
