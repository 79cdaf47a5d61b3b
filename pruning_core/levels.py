"""Sparsity levels as users write them: Distiller's ``start:stop:step`` range or a comma list.

A levels text is the one spec field whose meaning is far larger than its spelling (``0:1:1e-12`` is
a trillion levels), so it is measured before anything is built: a range is counted arithmetically
and a list by its commas, both against :class:`~pruning_core.limits.Limits`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pruning_core.limits import DEFAULT_LIMITS, Limits, quote

#: What a sensitivity sweep measures when no levels are given (Distiller's ``--sense-range`` habit).
DEFAULT_LEVELS = "0:0.95:0.05"
#: Range values are rounded to this many decimals (``0.1 * 3`` is ``0.3``).
_DECIMALS = 10
_STOP_TOLERANCE = 1e-12


def _level(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"level {quote(text)} is not a number") from None
    if not 0.0 <= value < 1.0:  # also refuses nan
        raise ValueError(f"level {value} is outside [0, 1): a level is the fraction of weights pruned")
    return value


def check_level_count(count: int, limits: Limits = DEFAULT_LIMITS) -> None:
    """Refuse more levels than ``limits.max_levels``: each one is a measurement of every parameter."""
    if count > limits.max_levels:
        raise ValueError(f"levels: {count:.4g} levels is more than the limit of {limits.max_levels} "
                         "(max_levels); use a larger step or fewer values")


def _range(spec: str, limits: Limits) -> list[float]:
    parts = spec.split(":")
    if len(parts) != 3:
        raise ValueError(f"levels {quote(spec)}: a range is start:stop:step, e.g. {DEFAULT_LEVELS}")
    try:
        start, stop, step = (float(p) for p in parts)
    except ValueError:
        raise ValueError(f"levels {quote(spec)}: start, stop and step must be numbers, e.g. {DEFAULT_LEVELS}") from None
    if not all(math.isfinite(v) for v in (start, stop, step)):
        raise ValueError(f"levels {quote(spec)}: start, stop and step must be finite numbers")
    if step <= 0:
        raise ValueError(f"levels {quote(spec)}: step must be positive")
    if step < limits.min_level_step:
        raise ValueError(f"levels {quote(spec)}: step {step:g} is below the minimum step {limits.min_level_step:g} "
                         f"(min_level_step); the finest useful range is 0:1:{limits.min_level_step:g}")
    # Counted, not expanded: the loop below runs at most one step past this estimate.
    estimate = max(0, math.ceil((stop - start) / step - 1e-9))
    check_level_count(estimate, limits)
    levels = []
    for count in range(estimate + 2):
        value = round(start + count * step, _DECIMALS)
        if value >= stop - _STOP_TOLERANCE:
            break
        levels.append(_level(str(value)))
    check_level_count(len(levels), limits)
    return levels


def parse_levels(spec: str | Sequence[float], limits: Limits = DEFAULT_LIMITS) -> list[float]:
    """Parse ``"0:0.95:0.05"`` (stop excluded, like Python's range) or ``"0,0.5,0.9"``.

    A text is bounded by ``limits`` (its length, its number of levels, a range's step) before any
    level is made; a sequence is already built, so its caller bounds its length
    (:func:`check_level_count`). Values are rounded to 10 decimals so that ``0.1 * 3`` prints as
    ``0.3``; duplicates are refused because each (parameter, level) pair is one measured point.
    """
    if not isinstance(spec, str):
        levels = [_level(str(v)) for v in spec]
    else:
        if len(spec) > limits.max_levels_chars:
            raise ValueError(f"levels: a text of {len(spec)} characters is longer than the limit of "
                             f"{limits.max_levels_chars} (max_levels_chars); write a range such as {DEFAULT_LEVELS}")
        if ":" in spec:
            levels = _range(spec, limits)
        else:
            check_level_count(spec.count(",") + 1, limits)
            levels = [_level(p.strip()) for p in spec.split(",") if p.strip()]
    if not levels:
        raise ValueError(f"levels {quote(spec)} give no level at all")
    if len(set(levels)) != len(levels):
        raise ValueError(f"levels {quote(spec)} repeat a value")
    return levels
