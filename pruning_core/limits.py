"""How much work one spec may describe, and how little of a bad input an error may quote (issue 13).

Torch-free, so the API validates with the same numbers the library enforces. ``Limits`` holds the
bounds an operator may change (the API's settings expose each one as ``PRUNESCOPE_<FIELD>``); the
constants below are facts or formats that do not vary between deployments. Every check against them
counts or measures what a spec describes and never builds it first.
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass

#: The largest seed accepted anywhere (numpy's and most RNGs' 32-bit range; torch would take 64 bits,
#: but the synthetic data derives per-sample seeds from it by multiplication).
MAX_SEED = 2**32 - 1
#: What a sweep may hold in memory by default (MB): half for the evaluation data (decoded images as uint8,
#: or the batches), half for the values cached at the cut. ImageNet's 50,000 validation images at 224x224
#: are 7.5 GB as uint8: give about 16,000 to decode them once per sweep.
SWEEP_MEMORY_MB = 1024
#: Parameter names or globs in one sensitivity spec, and the length of each one.
MAX_PARAMS = 1000
MAX_GLOB_CHARS = 300
#: Options in one ``dataset_options`` dict, and the length of one text option (a root path).
MAX_OPTIONS = 32
MAX_OPTION_CHARS = 4096
#: Dimensions of a sample shape (``CxHxW``; one more for volumes) and the text that spells it.
MAX_SHAPE_DIMS = 4
MAX_SHAPE_CHARS = 64
#: How much of an offending input an error message quotes; how long one message and how many
#: errors one answer may be (a body of a million bad items is refused with twenty of them).
QUOTE_CHARS = 80
MAX_MESSAGE_CHARS = 500
MAX_ERRORS = 20


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may ask for; the defaults are the documented ones."""

    #: levels of one sensitivity spec (a range is counted, never expanded, to check it)
    max_levels: int = 1000
    #: the smallest step of a ``start:stop:step`` range
    min_level_step: float = 1e-4
    #: characters of a levels text (a range or a comma list)
    max_levels_chars: int = 20_000
    #: samples of a generated dataset (``synthetic``'s ``n``) and a spec's ``samples`` subset
    max_dataset_n: int = 1_000_000
    #: classes of a generated dataset
    max_classes: int = 100_000
    #: values in one sample (the product of its shape): 3x1024x1024
    max_sample_elements: int = 3 * 1024 * 1024
    #: float32 MiB a generated dataset describes (n x its shape, plus its class patterns)
    max_dataset_mb: float = 4096.0
    #: side of the square images ``imagefolder`` resizes to
    max_image_size: int = 1024


DEFAULT_LIMITS = Limits()


class LimitError(ValueError):
    """A value outside what a spec may describe; ``field`` is the dotted path below the checked
    object (``"dataset_options.n"``), so the API can name ``spec.dataset_options.n`` exactly."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = QUOTE_CHARS
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 6
_REPR.maxlevel = 2


def clip(text: str, limit: int = QUOTE_CHARS) -> str:
    """``text`` cut to ``limit`` characters plus an ellipsis: for names and messages built from input."""
    return text if len(text) <= limit else text[:limit] + "…"


def quote(value: object, limit: int = QUOTE_CHARS) -> str:
    """A short ``repr`` of an offending input: at most ``limit`` characters and an ellipsis, computed
    from a prefix only, so a 190 MB value costs no more to quote than a short one."""
    if isinstance(value, str):
        return repr(value) if len(value) <= limit else repr(value[:limit]) + "…"
    try:
        text = _REPR.repr(value)
    except ValueError:  # an int past Python's digit limit for str()
        text = f"<a {type(value).__name__} too large to print>"
    return clip(text, limit)
