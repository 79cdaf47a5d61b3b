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


def mac_work(model: torch.nn.Module, example: torch.Tensor, names: list[str], levels: list[float],
             group: str) -> dict[str, int]:
    """MACs per sample each side computes for a sweep (``pruning_core.parallel.sweep_work``): the reference
    ratio beside each measured one. ``distiller`` runs the whole model per point; ``plain`` once more for the
    unpruned model; ``fast`` that, the prefix chain once and each level that prunes something after its cut."""
    from pruning_core import pruners
    from pruning_core.parallel import sweep_work

    work = sweep_work(model, example, names)
    weights = dict(model.named_parameters())

    def prunes(name: str, level: float) -> bool:
        w = weights[name].detach()
        mask = pruners.level_mask(w, level) if group == "element" else \
            pruners.structure_mask(w, level, "filters" if group == "filter" else "channels")
        return not bool(mask.all())

    changed = {n: sum(prunes(n, lv) for lv in levels) for n in names}
    return {"distiller": work.distiller(len(names) * len(levels)),
            "plain": work.engine(names, dict.fromkeys(names, len(levels)), fast=False),
            "fast": work.engine(names, changed)}
