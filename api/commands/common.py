"""Arguments shared by the commands that load a model and a dataset (train, sense, prune), and the job
specs' defaults and choices as the command line shows and uses them."""

from __future__ import annotations

import argparse
import typing
from collections.abc import Callable, Iterator, Sequence
from typing import Any


class Lazy:
    """A text computed when shown: ``--help`` prints the job specs' defaults without every command paying
    for importing them (argparse formats ``%(default)s`` and any attribute of the action with ``str``)."""

    def __init__(self, text: Callable[[], str]) -> None:
        self._text = text

    def __str__(self) -> str:
        return self._text()


class SpecDefault(Lazy):
    """The default of a job spec's field (``api.schemas``, where defaults live) as an option's default:
    shown by ``--help``, replaced by its value by :func:`resolve_spec_defaults` before a command runs."""

    def __init__(self, spec: str, field: str) -> None:
        super().__init__(lambda: str(self.value()))
        self.spec, self.field = spec, field

    def value(self) -> Any:
        import api.schemas

        return api.schemas.field_default(getattr(api.schemas, self.spec), self.field)


class SpecChoices(Sequence[str]):
    """The values a job spec's ``Literal`` field allows, as an option's ``choices`` (looked up on first use;
    give the option a ``metavar``, or argparse lists them, importing the schemas, when the option is added)."""

    def __init__(self, spec: str, field: str) -> None:
        self.spec, self.field = spec, field

    def _values(self) -> tuple[str, ...]:
        import api.schemas

        annotation = getattr(api.schemas, self.spec).model_fields[self.field].annotation
        if typing.get_origin(annotation) is not typing.Literal:  # Literal[...] | None: the literal's values
            annotation = next(a for a in typing.get_args(annotation) if typing.get_origin(a) is typing.Literal)
        return typing.get_args(annotation)

    def __getitem__(self, index: Any) -> Any:
        return self._values()[index]

    def __len__(self) -> int:
        return len(self._values())

    def __contains__(self, value: object) -> bool:
        return value in self._values()

    def __iter__(self) -> Iterator[str]:
        return iter(self._values())


def spec_option(parser: argparse.ArgumentParser, flag: str, spec: str, field: str | None = None,
                **kwargs: Any) -> argparse.Action:
    """``parser.add_argument(flag, ...)`` whose default is ``spec``'s for ``field`` (default: the flag's name),
    and whose choices (``choices=True``) are the field's ``Literal`` values; a help text shows them with
    ``%(choices)s``."""
    name = field or flag.lstrip("-").replace("-", "_")
    if kwargs.pop("choices", None) is not None:
        kwargs["choices"] = SpecChoices(spec, name)
        kwargs.setdefault("metavar", name.upper())  # argparse would list the choices now; help lists them later
    return parser.add_argument(flag, default=SpecDefault(spec, name), **kwargs)


def resolve_spec_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Replace every option left at a spec's default by that default's value (call first in a handler)."""
    for key, value in vars(args).items():
        if isinstance(value, SpecDefault):
            setattr(args, key, value.value())
    return args


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


def add_dataset_args(parser: argparse.ArgumentParser, *, dataset_required: bool = True,
                     spec: str = "SensitivitySpec") -> None:
    """--dataset, --dataset-opt, --batch-size and --device, with the defaults of ``spec`` (all kinds share them)."""
    parser.add_argument("--dataset", required=dataset_required, help="digits, synthetic, cifar10, mnist or imagefolder")
    parser.add_argument(
        "--dataset-opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dataset option, repeatable: root=/data/cifar, n=1000, shape=3x32x32, classes=10",
    )
    spec_option(parser, "--batch-size", spec, type=int, help="evaluation/training batch size (default %(default)s)")
    spec_option(parser, "--device", spec, help="auto (CUDA when present), cpu or cuda (default %(default)s)")


def dataset_options(args: argparse.Namespace) -> dict[str, Any]:
    """The --dataset-opt pairs; synthetic data defaults to the model's input shape and classes."""
    from pruning_core.datasets import options_for_model

    return options_for_model(args.dataset, args.model, parse_options(args.dataset_opt))


def load_split(args: argparse.Namespace, split: str) -> Any:
    """The dataset bundle of one split, as the command line describes it."""
    from pruning_core.datasets import load_dataset

    return load_dataset(args.dataset, split=split, **dataset_options(args))


def load_cli_model(args: argparse.Namespace, bundle: Any) -> Any:
    """The model by --model, with weights and masks from --checkpoint when given, as a job loads it for its
    dataset (:func:`pruning_core.checkpoint.load_for_dataset`)."""
    from pruning_core.checkpoint import load_for_dataset

    return load_for_dataset(args.checkpoint, args.model, bundle)
