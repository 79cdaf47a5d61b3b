"""What options each built-in dataset takes, with their types and ranges: one declaration, torch-free.

The API checks a spec's ``dataset_options`` against these when it validates the spec, and
``pruning_core.datasets.load_dataset`` converts the CLI's strings through the same code, so the
service, the CLI and the library refuse the same values with the same message. Nothing here builds
what an option describes: a shape is multiplied out, never allocated.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pruning_core.limits import (
    DEFAULT_LIMITS,
    MAX_OPTION_CHARS,
    MAX_OPTIONS,
    MAX_SEED,
    MAX_SHAPE_CHARS,
    MAX_SHAPE_DIMS,
    LimitError,
    Limits,
    clip,
    quote,
)

OptionKind = Literal["int", "float", "bool", "shape", "path"]
#: What a dataset's samples are for, and so what an evaluation on them measures (``pruning_core.tasks``):
#: ``classification`` (top1, top5, cross-entropy) or ``language-model`` (token cross-entropy, perplexity).
TASKS: tuple[str, ...] = ("classification", "language-model")
_INT_TEXT = re.compile(r"[+-]?\d{1,30}")
#: ``synthetic``'s sample count per split when ``n`` is not given (the larger one bounds the budget).
SYNTHETIC_DEFAULT_N = {"train": 1024, "test": 256}
#: ``synthetic``'s class patterns are at most this coarse per spatial dimension (upsampled to the shape).
SYNTHETIC_PATTERN_SIDE = 4
#: ``synthetic-tokens``' sequence count per split when ``n`` is not given.
SYNTHETIC_TOKENS_DEFAULT_N = {"train": 256, "test": 64}
#: The longest sequence a language-model dataset cuts (``seq_len``).
MAX_SEQ_LEN = 4096


def _number(value: float | None) -> str | None:
    """A bound as users type it: ``1000000``, ``4294967295``, ``0.5`` (never ``1e+06``)."""
    if value is None:
        return None
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


@dataclass(frozen=True)
class OptionSpec:
    """One option: its kind, default and range. ``high`` is a number or the name of a ``Limits`` field."""

    name: str
    kind: OptionKind
    default: Any = None
    low: float | None = None
    high: float | str | None = None
    doc: str = ""

    def maximum(self, limits: Limits) -> float | None:
        return getattr(limits, self.high) if isinstance(self.high, str) else self.high

    def range_text(self, limits: Limits) -> str:
        low, high = (_number(v) for v in (self.low, self.maximum(limits)))
        if low is None or high is None:
            text = f"at least {low}" if high is None else f"at most {high}"
        else:
            text = f"from {low} to {high}"
        return f"{text} (limit {self.high})" if isinstance(self.high, str) else text


@dataclass(frozen=True)
class DatasetOptions:
    """A built-in dataset's options; ``budget`` checks what they describe together (sizes)."""

    name: str
    options: tuple[OptionSpec, ...]
    budget: Callable[[Mapping[str, Any], Limits], None] | None = None
    task: str = "classification"  # one of TASKS: what its samples are for

    @property
    def defaults(self) -> dict[str, Any]:
        return {o.name: o.default for o in self.options}

    @property
    def needs_root(self) -> bool:
        return any(o.name == "root" for o in self.options)


# ------------------------------------------------------------------------------------ conversions

def _fail(option: str, value: object, reason: str) -> LimitError:
    return LimitError(f"option {option}={quote(value)}: {reason}", field=option)


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("must be a whole number, not a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
        return int(value.strip())
    raise ValueError("must be a whole number (no decimal point or exponent)")


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    if isinstance(value, (int, float)) or (isinstance(value, str) and len(value) <= 40):
        try:
            number = float(value)
        except (ValueError, OverflowError):
            pass
        else:
            if math.isfinite(number):
                return number
    raise ValueError("must be a finite number")


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, (str, int)) else ""
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("is not a boolean (use true/false)")


def parse_shape(text: str | tuple[int, ...] | list[int], limits: Limits = DEFAULT_LIMITS) -> tuple[int, ...]:
    """``"3x32x32"`` (or ``"3,32,32"``, or a tuple) -> ``(3, 32, 32)``: 1 to 4 positive dimensions whose
    product (values in one sample) is within ``limits.max_sample_elements``."""
    example = f"expected 1 to {MAX_SHAPE_DIMS} dimensions, each at least 1, like 3x32x32"
    if isinstance(text, (tuple, list)):
        if len(text) > MAX_SHAPE_DIMS or any(isinstance(d, bool) or not isinstance(d, int) for d in text):
            raise ValueError(f"shape {quote(text)}: {example}")
        dims = list(text)
    else:
        text = str(text)
        if len(text) > MAX_SHAPE_CHARS:
            raise ValueError(f"shape {quote(text)}: longer than {MAX_SHAPE_CHARS} characters; {example}")
        parts = text.lower().replace(",", "x").split("x")
        if len(parts) > MAX_SHAPE_DIMS or not all(_INT_TEXT.fullmatch(p.strip()) for p in parts):
            raise ValueError(f"shape {quote(text)}: {example}")
        dims = [int(p) for p in parts]
    if not 1 <= len(dims) <= MAX_SHAPE_DIMS or any(d <= 0 for d in dims):
        raise ValueError(f"shape {quote(text)}: {example}")
    values = math.prod(dims)
    if values > limits.max_sample_elements:
        raise ValueError(f"shape {quote(text)}: {values:,} values per sample is more than the limit of "
                         f"{limits.max_sample_elements:,} (max_sample_elements); use a smaller shape")
    return tuple(dims)


def _convert(option: OptionSpec, value: Any, limits: Limits) -> Any:
    """``value`` (JSON or a CLI string) as the option's type, within its range."""
    try:
        if option.kind == "path":
            if not isinstance(value, str) or not value.strip():
                raise ValueError("must be a non-empty path string")
            if len(value) > MAX_OPTION_CHARS:
                raise ValueError(f"is longer than the limit of {MAX_OPTION_CHARS} characters")
            try:
                return Path(value).expanduser()
            except RuntimeError:  # ~name of no such user
                raise ValueError("starts with ~ but names no user's home directory") from None
        if option.kind == "bool":
            return _to_bool(value)
        if option.kind == "shape":
            return parse_shape(value, limits)
        number: float = _to_int(value) if option.kind == "int" else _to_float(value)
    except ValueError as exc:
        reason = str(exc).removeprefix(f"shape {quote(value)}: ")
        if option.kind in ("int", "float"):
            reason = f"{reason}, {option.range_text(limits)}"
        raise _fail(option.name, value, reason) from None
    high = option.maximum(limits)
    if (option.low is not None and number < option.low) or (high is not None and number > high):
        kind = "a whole number" if option.kind == "int" else "a number"
        raise _fail(option.name, value, f"must be {kind} {option.range_text(limits)}")
    return number


# ---------------------------------------------------------------------------------- declarations

def _synthetic_budget(opts: Mapping[str, Any], limits: Limits) -> None:
    """n samples of ``shape`` plus one coarse pattern per class, as float32, within max_dataset_mb.

    Runs only once the shape is known: at the API a spec without one takes its model's input shape,
    which only the worker can look up, so the worker's ``load_dataset`` checks it again there."""
    shape = opts.get("shape")
    if shape is None:
        return
    n = opts.get("n") or max(SYNTHETIC_DEFAULT_N.values())
    classes = opts.get("classes") or 10
    pattern = shape[0] * math.prod(min(d, SYNTHETIC_PATTERN_SIDE) for d in shape[1:])
    mib = (n * math.prod(shape) + classes * pattern) * 4 / 2**20
    if mib > limits.max_dataset_mb:
        field = "n" if "n" in opts and opts["n"] else "shape"
        raise LimitError(
            f"synthetic data of n={n:,} samples of shape {'x'.join(map(str, shape))} and {classes:,} "
            f"classes is {mib:,.0f} MiB of float32, more than the limit of {limits.max_dataset_mb:g} MiB "
            "(max_dataset_mb); use a smaller n or shape", field=field)


def _tokens_budget(opts: Mapping[str, Any], limits: Limits) -> None:
    """n sequences of seq_len + 1 int64 token ids within max_dataset_mb."""
    n = opts.get("n") or max(SYNTHETIC_TOKENS_DEFAULT_N.values())
    seq_len = opts.get("seq_len") or 32
    mib = n * (seq_len + 1) * 8 / 2**20
    if mib > limits.max_dataset_mb:
        raise LimitError(f"synthetic-tokens of n={n:,} sequences of {seq_len:,} tokens is {mib:,.0f} MiB of int64, "
                         f"more than the limit of {limits.max_dataset_mb:g} MiB (max_dataset_mb); use a smaller n "
                         "or seq_len", field="n" if opts.get("n") else "seq_len")


_ROOT = OptionSpec("root", "path", doc="directory holding the files, under a configured dataset root")
_SEQ_LEN = OptionSpec("seq_len", "int", 32, 1, MAX_SEQ_LEN, "tokens per sequence (the model's context)")

DATASETS: dict[str, DatasetOptions] = {d.name: d for d in (
    DatasetOptions("digits", ()),
    DatasetOptions("synthetic", (
        OptionSpec("n", "int", None, 1, "max_dataset_n", "samples per split (default 1024 train / 256 test)"),
        OptionSpec("shape", "shape", (3, 32, 32), doc="one sample's shape, CxHxW (default: the model's input)"),
        OptionSpec("classes", "int", 10, 1, "max_classes", "class count (default: the model's)"),
        OptionSpec("seed", "int", 0, 0, MAX_SEED, "seed of the class patterns and samples"),
        OptionSpec("noise", "float", 1.0, 0, 1000, "standard deviation of the per-sample noise"),
    ), _synthetic_budget),
    DatasetOptions("cifar10", (_ROOT, OptionSpec("augment", "bool", None, doc="crop+flip (default: train split)"))),
    DatasetOptions("mnist", (_ROOT,)),
    DatasetOptions("imagefolder", (_ROOT, OptionSpec("size", "int", 224, 1, "max_image_size", "image side"))),
    DatasetOptions("text", (
        # one path option, ``root`` (a file or a directory), so the API's check that it resolves under a
        # configured dataset root covers it
        OptionSpec("root", "path", doc="a text file (split into train and test) or a directory holding train.txt "
                   "and test.txt, under a configured dataset root"),
        _SEQ_LEN,
        OptionSpec("test_fraction", "float", 0.1, 0.01, 0.9, "share of a single file's tokens held out for test"),
        OptionSpec("max_vocab", "int", 50_000, 2, "max_classes", "vocabulary size cap (most frequent words)"),
    ), task="language-model"),
    DatasetOptions("synthetic-tokens", (
        OptionSpec("n", "int", None, 1, "max_dataset_n", "sequences per split (default 256 train / 64 test)"),
        OptionSpec("vocab", "int", 64, 2, "max_classes", "vocabulary size (default: the model's)"),
        _SEQ_LEN,
        OptionSpec("seed", "int", 0, 0, MAX_SEED, "seed of the token ids"),
    ), _tokens_budget, task="language-model"),
)}


def option_names() -> frozenset[str]:
    """Every option some built-in dataset declares."""
    return frozenset(o.name for d in DATASETS.values() for o in d.options)


def check_dataset_options(dataset: str, given: Mapping[str, Any], limits: Limits = DEFAULT_LIMITS, *,
                          with_defaults: bool = False) -> dict[str, Any]:
    """``given`` converted to their types and checked against ``dataset``'s declarations and ``limits``.

    Unknown options are errors that list the known ones; ``None`` values mean "the default". With
    ``with_defaults`` the missing options are filled in (as ``load_dataset`` needs them). Raises
    :class:`LimitError` whose ``field`` is the offending option.
    """
    if dataset not in DATASETS:
        raise LimitError(f"unknown dataset {quote(dataset)}; known datasets: {', '.join(DATASETS)}")
    declared = {o.name: o for o in DATASETS[dataset].options}
    if len(given) > MAX_OPTIONS:
        raise LimitError(f"{len(given)} options is more than the limit of {MAX_OPTIONS}")
    out = DATASETS[dataset].defaults if with_defaults else {}
    for key, value in given.items():
        if key not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise LimitError(f"dataset {dataset!r} has no option {quote(key)}; its options: {known}", field=clip(key))
        if value is not None:
            out[key] = _convert(declared[key], value, limits)
    budget = DATASETS[dataset].budget
    if budget is not None:
        budget(out, limits)
    return out


def dataset_task(name: str) -> str:
    """The task a dataset's samples are for (a plugin's is known once it is loaded: see its bundle)."""
    return DATASETS[name].task if name in DATASETS else "classification"
