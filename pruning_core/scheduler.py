"""CompressionScheduler: runs a :class:`~pruning_core.schedule.Schedule` inside a training loop.

Like Distiller's, it is driven by epoch/minibatch callbacks, but it keeps no global state: the masks
live in a :class:`~pruning_core.masks.MaskSet` (attached to the optimizer, so pruned weights get no
gradient and stay exactly zero after each step) and the pruners are built from the schedule's data.
Epochs are 0-based, as in Distiller's YAML.

Learning-rate policies step their scheduler once at the end of each active epoch (``step()``);
Distiller passed the absolute epoch (``step(epoch=e + 1)``), which torch has deprecated and which makes
an ExponentialLR that starts at epoch 40 jump to ``gamma**41`` at once. Here the decay counts from the
policy's first epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from . import pruners as _pruners
from .agp import AutomatedGradualPruner, L1RankedStructureParameterPruner_AGP
from .masks import MaskSet
from .schedule import PolicySpec, PrunerSpec, Schedule, resolve_weights

_AGP_CLASSES = {
    "AutomatedGradualPruner": AutomatedGradualPruner,
    "L1RankedStructureParameterPruner_AGP": L1RankedStructureParameterPruner_AGP,
}


def build_pruner(spec: PrunerSpec) -> Any:
    """Instantiate the pruner class a schedule entry names, with its arguments."""
    cls = _AGP_CLASSES.get(spec.cls) or getattr(_pruners, spec.cls)
    return cls(**spec.args)


def build_lr_scheduler(cls_name: str, args: dict[str, Any], optimizer: torch.optim.Optimizer) -> Any:
    """Instantiate ``torch.optim.lr_scheduler.<cls_name>(optimizer, **args)``."""
    return getattr(torch.optim.lr_scheduler, cls_name)(optimizer, **args)


class CompressionScheduler:
    """Applies a schedule's pruning and lr policies as training progresses.

    Call order per epoch: ``on_epoch_begin(e)`` (pruners update masks), then per minibatch the
    optimizer step (the attached MaskSet re-zeros pruned weights) and optionally ``on_minibatch_end``,
    then ``on_epoch_end(e)`` (lr policies step). ``after_prune(masks)`` runs whenever masks changed,
    e.g. to extend filter masks to the BatchNorm channels that follow them.
    """

    def __init__(self, model: nn.Module, schedule: Schedule, masks: MaskSet | None = None, *,
                 optimizer: torch.optim.Optimizer | None = None,
                 after_prune: Callable[[MaskSet], None] | None = None) -> None:
        resolve_weights(schedule, model)  # unknown names fail here, located in the YAML
        self.model = model
        self.schedule = schedule
        self.masks = masks if masks is not None else MaskSet(model)
        self.after_prune = after_prune
        self.pruners = {name: build_pruner(spec) for name, spec in schedule.pruners.items()}
        self.lr_schedulers: dict[str, Any] = {}
        self.optimizer: torch.optim.Optimizer | None = None
        self.epoch: int | None = None
        self.pruned: dict[int, dict[str, float]] = {}  # epoch -> parameter -> sparsity after pruning
        if optimizer is not None:
            self.attach(optimizer)

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Bind the lr schedulers to ``optimizer`` (masks are attached by the training loop)."""
        self.optimizer = optimizer
        self.lr_schedulers = {name: build_lr_scheduler(s.cls, s.args, optimizer)
                              for name, s in self.schedule.lr_schedulers.items()}

    def _active(self, kind: str, epoch: int) -> list[PolicySpec]:
        return [p for p in self.schedule.policies if p.kind == kind and epoch in p.active_epochs()]

    def target_sparsities(self, epoch: int) -> dict[str, float]:
        """Per pruner, the AGP level that ``on_epoch_begin(epoch)`` will use (AGP pruners only)."""
        out = {}
        for policy in self._active("pruner", epoch):
            pruner = self.pruners[policy.instance_name]
            if isinstance(pruner, AutomatedGradualPruner):
                out[policy.instance_name] = pruner.target_sparsity(epoch, *policy.span())
        return out

    def on_epoch_begin(self, epoch: int) -> dict[str, float]:
        """Run the pruners scheduled for ``epoch``; returns the sparsity of each parameter pruned."""
        self.epoch = epoch
        result: dict[str, float] = {}
        for policy in self._active("pruner", epoch):
            pruner = self.pruners[policy.instance_name]
            if isinstance(pruner, AutomatedGradualPruner):
                pruner.set_epoch(epoch, *policy.span())
            result.update(pruner.prune(self.model, self.masks))
        if result:
            if self.after_prune is not None:
                self.after_prune(self.masks)
            self.pruned[epoch] = result
        return result

    def on_minibatch_end(self) -> None:
        """Re-apply the masks (needed only when the MaskSet is not attached to the optimizer)."""
        self.masks.apply()

    def on_epoch_end(self, epoch: int | None = None) -> None:
        """Step the lr schedulers whose policies are active at ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        if epoch is None:
            return
        if self._active("lr_scheduler", epoch) and self.optimizer is None:
            raise RuntimeError("lr policies need an optimizer: call attach(optimizer) first")
        for policy in self._active("lr_scheduler", epoch):
            self.lr_schedulers[policy.instance_name].step()

    def step(self) -> None:
        """``on_epoch_end`` for the current epoch: lets ``training.train(scheduler=...)`` drive it."""
        self.on_epoch_end()

    def state_dict(self) -> dict[str, Any]:
        """Masks and lr scheduler states, for resuming."""
        return {"masks": self.masks.state_dict(),
                "lr_schedulers": {n: s.state_dict() for n, s in self.lr_schedulers.items()}}
