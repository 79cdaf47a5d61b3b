"""What the sensitivity benchmarks compare: a point as a row, the check that two engines measured the same
points, and one timed run (synchronised on CUDA so the time is the work's)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

Row = tuple[str, float, float, float, float]  # parameter, sparsity, top1, top5, loss


def same_rows(a: list[Row], b: list[Row]) -> None:
    """Raise unless the two runs measured the same points (top1/top5 exactly, loss within 1e-5 relative)."""
    assert len(a) == len(b), (len(a), len(b))
    for p, q in zip(a, b, strict=True):
        assert p[:4] == q[:4], (p, q)
        assert abs(p[4] - q[4]) <= 1e-5 * abs(p[4]), (p, q)


def timed(fn: Callable[[], list[Row]], device: str) -> tuple[float, list[Row]]:
    """(seconds, rows) of one run of ``fn``."""
    start = time.perf_counter()
    rows = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, rows
