"""Distiller's own learning-rate schedulers, which ``torch.optim.lr_scheduler`` lacks.

Schedules name them in ``lr_schedulers:`` as they name torch's; their arguments and torch-free
steppers are declared in :data:`pruning_core.lr_table.LR_SCHEDULERS`, which names this module's classes
as their implementation.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

import torch
from torch.optim.lr_scheduler import LRScheduler


class MultiStepMultiGammaLR(LRScheduler):
    """Multiply the lr by ``gammas[i]`` at ``milestones[i]`` (cumulatively), Distiller's scheduler.

    Unlike ``MultiStepLR`` each milestone has its own factor, e.g. milestones [30, 60], gammas
    [0.1, 0.5]: lr, 0.1·lr from epoch 30, 0.05·lr from epoch 60.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, milestones: Sequence[int], gammas: Sequence[float],
                 last_epoch: int = -1) -> None:
        if list(milestones) != sorted(milestones):
            raise ValueError(f"milestones must be increasing, got {list(milestones)}")
        if len(milestones) != len(gammas):
            raise ValueError(f"milestones and gammas must have the same length, got {len(milestones)} "
                             f"and {len(gammas)}")
        self.milestones = list(milestones)
        self.multiplicative_gammas = [1.0]
        for gamma in gammas:
            self.multiplicative_gammas.append(gamma * self.multiplicative_gammas[-1])
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        idx = bisect_right(self.milestones, self.last_epoch)
        return [base_lr * self.multiplicative_gammas[idx] for base_lr in self.base_lrs]
