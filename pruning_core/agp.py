"""Automated Gradual Pruning (Zhu & Gupta 2017) with Distiller's epoch arithmetic.

The target sparsity at epoch t of a policy running ``starting_epoch..ending_epoch`` (end excluded)
every ``frequency`` epochs is ``s_f + (s_i - s_f) * (1 - (t - t0) / span)**3`` with
``span = ((end - start - 1) // freq) * freq``: the last active epoch of ``range(start, end, freq)``
is exactly ``start + span``, so it reaches ``final_sparsity`` (Distiller's
``AutomatedGradualPrunerBase.compute_target_sparsity``). Masks are then computed with the same
primitives as the one-shot pruners (one definition of "level" and "filter" pruning).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from .declarations import agp_sparsity
from .masks import MaskSet
from .pruners import (
    ActivationRanking,
    BernoulliDrop,
    RankedStructures,
    RulePruner,
    View,
    level_mask,
    weight_rules,
)

__all__ = ["ActivationAPoZRankedFilterPruner_AGP", "ActivationMeanRankedFilterPruner_AGP", "AutomatedGradualPruner",
           "BernoulliFilterPruner_AGP", "L1RankedStructureParameterPruner_AGP", "agp_sparsity"]


class AutomatedGradualPruner(RulePruner[bool]):
    """Element-wise AGP: at each scheduled epoch, prune ``int(s_t * n)`` smallest-|w| weights.

    Call :meth:`set_epoch` (the scheduler does) before :meth:`prune`; ``weights`` are names or globs.
    """

    def __init__(self, initial_sparsity: float, final_sparsity: float, weights: Sequence[str] | str) -> None:
        if not 0.0 <= initial_sparsity < final_sparsity < 1.0:
            raise ValueError(f"AGP needs 0 <= initial_sparsity < final_sparsity < 1, "
                             f"got {initial_sparsity} and {final_sparsity}")
        super().__init__(weight_rules(weights, True))
        self.initial_sparsity = initial_sparsity
        self.final_sparsity = final_sparsity
        self.level = initial_sparsity

    def target_sparsity(self, epoch: int, starting_epoch: int, ending_epoch: int, frequency: int = 1) -> float:
        """The AGP target of this pruner at ``epoch`` of a policy with that span."""
        return agp_sparsity(self.initial_sparsity, self.final_sparsity, epoch, starting_epoch, ending_epoch,
                            frequency)

    def set_epoch(self, epoch: int, starting_epoch: int, ending_epoch: int, frequency: int = 1) -> float:
        """Set the level that the next :meth:`prune` uses; returns it."""
        self.level = self.target_sparsity(epoch, starting_epoch, ending_epoch, frequency)
        return self.level

    def _mask(self, tensor: torch.Tensor, setting: bool, name: str) -> torch.Tensor:
        return level_mask(tensor, self.level)


class L1RankedStructureParameterPruner_AGP(RankedStructures, AutomatedGradualPruner):  # noqa: N801 (Distiller's name)
    """Structured AGP: prune ``int(s_t * count)`` whole structures of smallest L1 norm.

    Group types as :class:`~pruning_core.pruners.L1RankedStructureParameterPruner` (Filters, Channels,
    Rows, Blocks with ``kwargs.block_shape``), and ``group_dependency: Leader``.
    """

    def __init__(self, initial_sparsity: float, final_sparsity: float, group_type: str,
                 weights: Sequence[str] | str, group_dependency: str | None = None,
                 kwargs: Mapping | None = None) -> None:
        self._init_ranked(group_type, group_dependency, kwargs)
        super().__init__(initial_sparsity, final_sparsity, weights)

    def prune(self, model: nn.Module, masks: MaskSet, view: View | None = None) -> dict[str, float]:
        self._rank_leader(model, self.level, view)
        try:
            return super().prune(model, masks, view)
        finally:
            self._leader_keep = None

    def _mask(self, tensor: torch.Tensor, setting: bool, name: str) -> torch.Tensor:
        return self._ranked_mask(tensor, self.level)


class _FilterRankedAGP(AutomatedGradualPruner):
    """AGP over whole filters chosen by something other than their weights (activations, a random draw)."""

    _filters_mask: Callable[[torch.Tensor, float, str], torch.Tensor]
    _init_filters: Callable[[str, str | None], None]

    def __init__(self, initial_sparsity: float, final_sparsity: float, group_type: str,
                 weights: Sequence[str] | str, group_dependency: str | None = None) -> None:
        self._init_filters(group_type, group_dependency)
        super().__init__(initial_sparsity, final_sparsity, weights)

    def _mask(self, tensor: torch.Tensor, setting: bool, name: str) -> torch.Tensor:
        return self._filters_mask(tensor, self.level, name)


class ActivationAPoZRankedFilterPruner_AGP(ActivationRanking, _FilterRankedAGP):  # noqa: N801 (Distiller's name)
    """AGP network trimming: at each scheduled epoch drop ``int(s_t * filters)`` filters with the highest APoZ
    of their ReLU outputs over the training batches since the last prune (as
    :class:`~pruning_core.pruners.ActivationAPoZRankedFilterPruner`)."""

    statistic = "apoz"
    prune_highest = True


class ActivationMeanRankedFilterPruner_AGP(ActivationRanking, _FilterRankedAGP):  # noqa: N801 (Distiller's name)
    """AGP over the filters with the lowest mean output activation (see
    :class:`~pruning_core.pruners.ActivationMeanRankedFilterPruner` for Distiller's reversed ranking)."""

    statistic = "mean"
    prune_highest = False


class BernoulliFilterPruner_AGP(BernoulliDrop, _FilterRankedAGP):  # noqa: N801 (Distiller's name)
    """DropFilter with an AGP drop probability: each filter is dropped with probability ``s_t``."""

    def __init__(self, initial_sparsity: float, final_sparsity: float, group_type: str,
                 weights: Sequence[str] | str, group_dependency: str | None = None, seed: int = 0) -> None:
        self._init_draws(seed)
        super().__init__(initial_sparsity, final_sparsity, group_type, weights, group_dependency)
