"""Confidence intervals for accuracies measured on a finite sample.

A sensitivity point measured on 450 images is not as certain as one measured on 10 000; the
Wilson score interval says how far the true accuracy may be, and stays inside [0, 100] even at
0 % or 100 % (the normal approximation does not).
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # two-sided 95 % quantile of the standard normal


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of ``successes / n`` in percent; ``(0, 100)`` when nothing was seen."""
    if n <= 0:
        return 0.0, 100.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes {successes} outside 0..{n}")
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half) * 100.0, min(1.0, centre + half) * 100.0
