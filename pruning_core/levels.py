"""Sparsity levels as users write them: Distiller's ``start:stop:step`` range or a comma list."""

from __future__ import annotations

from collections.abc import Sequence


def _level(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"level {text!r} is not a number") from None
    if not 0.0 <= value < 1.0:
        raise ValueError(f"level {value} is outside [0, 1): a level is the fraction of weights pruned")
    return value


def parse_levels(spec: str | Sequence[float]) -> list[float]:
    """Parse ``"0:0.95:0.05"`` (stop excluded, like Python's range) or ``"0,0.5,0.9"``.

    Values are rounded to 10 decimals so that ``0.1 * 3`` prints as ``0.3``; duplicates are refused
    because each (parameter, level) pair is one measured point.
    """
    if not isinstance(spec, str):
        levels = [_level(str(v)) for v in spec]
    elif ":" in spec:
        parts = spec.split(":")
        if len(parts) != 3:
            raise ValueError(f"levels {spec!r}: a range is start:stop:step, e.g. 0:0.95:0.05")
        start, stop, step = (float(p) for p in parts)
        if step <= 0:
            raise ValueError(f"levels {spec!r}: step must be positive")
        count = 0
        levels = []
        while True:
            value = round(start + count * step, 10)
            if value >= stop - 1e-12:
                break
            levels.append(_level(str(value)))
            count += 1
    else:
        levels = [_level(p.strip()) for p in spec.split(",") if p.strip()]
    if not levels:
        raise ValueError(f"levels {spec!r} give no level at all")
    if len(set(levels)) != len(levels):
        raise ValueError(f"levels {spec!r} repeat a value")
    return levels
