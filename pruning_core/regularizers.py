"""Distiller's regularizers: Group Lasso (structure learning, Wen et al. 2016) and L1.

A regularizer adds a penalty to the training loss (``loss(model)``) so that whole groups of weights
(filters, channels, rows, ...) or single weights (L1, e.g. on BatchNorm scales for network slimming,
Liu et al. 2017) shrink towards zero. With ``threshold_criteria`` it also zeroes the groups whose
mean |w| (``Mean_Abs``) or max |w| (``Max``) fell to the strength or below (``threshold``), as
Distiller's ``RegularizationPolicy`` does after every minibatch; that is what turns "small" into
"exactly zero", so filters can then be removed physically.

Group semantics follow Distiller's ``GroupLassoRegularizer``: the penalty is
``strength * sum_g sqrt(sum(w_g**2) + 1e-8)`` over the groups (``4D``: the whole tensor's L2 norm).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .declarations import THRESHOLD_CRITERIA
from .groups import DISTILLER, DISTILLER_COMBINED, REGULARIZER_GROUP_TYPES
from .metrics import structure_view

EPSILON = 1e-8


# Distiller's regularization group types -> the canonical groups (pruning_core.groups); one view function
# (metrics.structure_view) serves the penalty, the thresholding and the mask expansion, so a group means
# the same structures in all three and in the pruners and metrics.
GROUP_TYPES = REGULARIZER_GROUP_TYPES
COMBINED = DISTILLER_COMBINED


def _parts(group_type: str) -> tuple[str, ...]:
    """The canonical groups a Distiller group type sums over (two for a combined type such as Rows+Cols)."""
    if group_type in COMBINED:
        return COMBINED[group_type]
    if group_type not in GROUP_TYPES:
        raise ValueError(f"group type {group_type!r} is not supported; use one of {', '.join(GROUP_TYPES)}")
    return (DISTILLER[group_type],)


def group_lasso(t: torch.Tensor, group_type: str, strength: float) -> torch.Tensor:
    """Distiller's Group Lasso penalty of one weight (differentiable)."""
    total = t.new_zeros(())
    for part in _parts(group_type):
        groups = structure_view(t, part)
        if part == "tensor":  # one group: Distiller uses the plain norm
            total = total + groups.norm(2) * strength
        else:
            total = total + groups.pow(2).sum(dim=1).add(EPSILON).sqrt().sum() * strength
    return total


def group_threshold_mask(t: torch.Tensor, group_type: str, threshold: float, criteria: str) -> torch.Tensor:
    """Keep-mask (True = keep) that drops each group whose mean |w| or max |w| is ``<= threshold``."""
    if criteria not in THRESHOLD_CRITERIA:
        raise ValueError(f"threshold_criteria {criteria!r} is not supported; use Mean_Abs or Max")
    keep = torch.ones(t.shape, dtype=torch.bool, device=t.device)
    index = torch.arange(t.numel(), device=t.device).view(t.shape)
    for part in _parts(group_type):
        groups = structure_view(t.detach().abs(), part)
        score = groups.mean(dim=1) if criteria == "Mean_Abs" else groups.amax(dim=1)
        drop = score <= threshold
        if drop.any():
            flat = keep.view(-1)
            flat[structure_view(index, part)[drop].reshape(-1)] = False
    return keep


class _Regularizer:
    """Maps parameter names (model names, already resolved) to a setting; subclasses give the penalty."""

    def __init__(self, reg_regims: Mapping[str, Any], threshold_criteria: str | None = None) -> None:
        if not reg_regims:
            raise ValueError(f"{type(self).__name__} needs reg_regims (parameter name -> strength)")
        if threshold_criteria is not None and threshold_criteria not in THRESHOLD_CRITERIA:
            raise ValueError(f"threshold_criteria {threshold_criteria!r} is not supported; use Mean_Abs or Max")
        self.reg_regims = dict(reg_regims)
        self.threshold_criteria = threshold_criteria

    def _params(self, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        params = dict(model.named_parameters())
        missing = [n for n in self.reg_regims if n not in params]
        if missing:
            raise ValueError(f"{type(self).__name__}: not parameters of the model: {', '.join(missing)}")
        return [(n, params[n]) for n in self.reg_regims]

    def penalty(self, t: torch.Tensor, setting: Any) -> torch.Tensor:
        raise NotImplementedError

    def mask(self, t: torch.Tensor, setting: Any) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, model: nn.Module) -> torch.Tensor:
        """The penalty to add to the training loss (a scalar tensor with gradient)."""
        terms = [self.penalty(p, self.reg_regims[n]) for n, p in self._params(model)]
        return torch.stack(terms).sum() if terms else torch.zeros(())

    def threshold(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Keep-masks from ``threshold_criteria`` (empty without one): what falls to zero now."""
        if self.threshold_criteria is None:
            return {}
        return {n: self.mask(p, self.reg_regims[n]) for n, p in self._params(model)}


class GroupLassoRegularizer(_Regularizer):
    """Group Lasso: ``reg_regims`` maps a parameter to ``[strength, group_type]`` (group types in
    :data:`GROUP_TYPES`); with ``threshold_criteria`` a group whose Mean_Abs/Max is ``<= strength``
    is zeroed."""

    def __init__(self, reg_regims: Mapping[str, Sequence[Any]], threshold_criteria: str | None = None) -> None:
        super().__init__(reg_regims, threshold_criteria)
        for name, (_strength, group_type) in self.reg_regims.items():
            if group_type not in GROUP_TYPES:
                raise ValueError(f"{name}: group type {group_type!r} is not supported; use one of "
                                 f"{', '.join(GROUP_TYPES)}")

    def penalty(self, t: torch.Tensor, setting: Sequence[Any]) -> torch.Tensor:
        strength, group_type = setting
        return group_lasso(t, group_type, float(strength))

    def mask(self, t: torch.Tensor, setting: Sequence[Any]) -> torch.Tensor:
        strength, group_type = setting
        return group_threshold_mask(t, group_type, float(strength), self.threshold_criteria or "Mean_Abs")


class L1Regularizer(_Regularizer):
    """L1: ``reg_regims`` maps a parameter (any: BatchNorm scales too) to its strength; the penalty is
    ``strength * sum|w|``; with ``threshold_criteria`` weights with ``|w| <= strength`` are zeroed."""

    def penalty(self, t: torch.Tensor, setting: float) -> torch.Tensor:
        return t.abs().sum() * float(setting)

    def mask(self, t: torch.Tensor, setting: float) -> torch.Tensor:
        return t.detach().abs() > float(setting)


def channel_norms(t: torch.Tensor) -> torch.Tensor:
    """The L2 norm of each input channel of a conv weight (all its filters' kernels for that channel), with
    Distiller's ``EPSILON`` under the root so the norm of a zero channel has a gradient."""
    return structure_view(t, "channels").pow(2).sum(dim=1).add(EPSILON).sqrt()


class GroupVarianceRegularizer(_Regularizer):
    """Group variance (Torfi et al. 2018, "Attention-based guided structured sparsity"), as Distiller's: the
    penalty ``strength / var(channel L2 norms)`` (unbiased variance) rewards a spread between strong and weak
    input channels, so a Group Lasso beside it can zero the weak ones. ``reg_regims`` maps a conv weight to
    ``[strength, Channels]`` (the one group type Distiller implements); no thresholding of its own."""

    def __init__(self, reg_regims: Mapping[str, Sequence[Any]]) -> None:
        super().__init__(reg_regims)
        for name, (_strength, group_type) in self.reg_regims.items():
            if group_type != "Channels":
                raise ValueError(f"{name}: GroupVarianceRegularizer supports group type Channels only, "
                                 f"got {group_type!r}")

    def penalty(self, t: torch.Tensor, setting: Sequence[Any]) -> torch.Tensor:
        strength, _group_type = setting
        return float(strength) / channel_norms(t).var()
