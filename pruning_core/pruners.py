"""Pruners with Distiller's semantics, minus its bugs.

The mask primitives are pure functions of one tensor (mask True = keep). The classes map
parameter names to settings, compute masks with the primitives and store them in a ``MaskSet``.

Kept from Distiller: element pruning zeroes exactly ``int(level * n)`` weights of smallest |w|;
structure pruning zeroes ``int(level * count)`` filters/channels of smallest L1 norm; thresholds
prune ``|w| <= threshold``. Fixed: ties are broken by index (the lower index is pruned first,
so results are reproducible), names match exactly or by glob (never by substring), a level whose
count rounds to 0 prunes nothing, and unsupported shapes raise ValueError naming the parameter.
"""

from __future__ import annotations

import fnmatch
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Generic, TypeVar

import torch
from torch import nn

from .declarations import FILTER_GROUP_TYPES, is_glob, rule_for
from .groups import DISTILLER_RANKED, RANKED_GROUP_TYPES, Group, distiller_name, group
from .masks import MaskSet
from .metrics import prunable_parameters, sparsity, structure_view

V = TypeVar("V")
#: what a pruner ranks for a parameter instead of its value (name, weight) -> tensor of the same shape, e.g.
#: the weight folded with the BatchNorm after it (a policy's ``fold_batchnorm``); the mask applies to the weight
View = Callable[[str, torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- primitives


def _count(level: float, total: int) -> int:
    """Distiller's count: ``int()`` of the float product, so 0.29 * 100 gives 28."""
    if not 0.0 <= level <= 1.0:
        raise ValueError(f"level {level} is outside [0, 1]")
    return int(level * total)


def _keep_all_but_lowest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool keep-vector that drops the ``k`` lowest ``scores``; a stable sort prunes the lower index
    first among equal scores."""
    keep = torch.ones(scores.shape, dtype=torch.bool, device=scores.device)
    if k > 0:
        keep[torch.sort(scores, stable=True).indices[:k]] = False
    return keep


def level_mask(t: torch.Tensor, level: float) -> torch.Tensor:
    """Prune exactly ``int(level * t.numel())`` elements of smallest |w| (ties: lower flat index)."""
    scores = t.detach().abs().flatten()
    return _keep_all_but_lowest(scores, _count(level, scores.numel())).view(t.shape)


def threshold_mask(t: torch.Tensor, threshold: float) -> torch.Tensor:
    """Prune every element with ``|w| <= threshold`` (Distiller keeps ``|w| > threshold``)."""
    return t.detach().abs() > threshold


def _wide(t: torch.Tensor) -> torch.Tensor:
    # float64 sums so equal L1 norms compare equal and ties fall to the index; MPS has no float64.
    return t.float() if t.device.type == "mps" else t.double()


def structure_mask(t: torch.Tensor, level: float, kind: str) -> torch.Tensor:
    """Prune ``int(level * count)`` whole structures of ``kind`` of smallest L1 norm: filters (dim 0),
    channels (dim 1), or a matrix's rows (dim 0) or cols (dim 1), as :mod:`pruning_core.groups` defines them.

    Ranking by L1 norm equals Distiller's ranking by mean |w| within a tensor; ties go by index.
    """
    g = group(kind)
    if g.dim is None:
        raise ValueError(f"group {kind!r} is not a slice of one dim; use filters, channels, rows or cols")
    if t.dim() < 2:
        raise ValueError(f"{g.name} pruning needs a conv or linear weight (>= 2 dims), got shape {tuple(t.shape)}")
    norms = _wide(structure_view(t.detach().abs(), g.name)).sum(dim=1)
    count = t.shape[g.dim]
    keep = _keep_all_but_lowest(norms, _count(level, count))
    shape = [1] * t.dim()
    shape[g.dim] = count
    return keep.view(shape).expand(t.shape).contiguous()


def _check_block_shape(block_shape: Sequence[int] | None) -> None:
    if block_shape is None or len(block_shape) != 4 or any(not isinstance(v, int) or v < 1 for v in block_shape):
        raise ValueError(f"Blocks need kwargs.block_shape = [repetitions, depth, height, width] of positive "
                         f"integers, got {block_shape}")
    if block_shape[2] != 1 or block_shape[3] != 1:
        raise ValueError(f"only block shapes repetitions x depth x 1 x 1 are supported (as Distiller), "
                         f"got {block_shape}")


def _ranked_group(t: torch.Tensor, group_type: str) -> Group:
    """The group a ranked pruner's Distiller ``group_type`` means, checked against ``t``'s shape."""
    g = group(group_type, DISTILLER_RANKED)
    if not g.applies(t.dim()):
        ranks = f"{g.min_dims}-D" if g.max_dims == g.min_dims else f"at least {g.min_dims}-D"
        raise ValueError(f"group_type {group_type} ranks {g.description} and applies to {ranks} weights, "
                         f"not shape {tuple(t.shape)}")
    return g


def _group_index(t: torch.Tensor, group_type: str, block_shape: Sequence[int] | None = None) -> torch.Tensor:
    """Flat element indices of ``t`` as (groups x elements): one row per ranked structure.

    ``group_type`` is a ranked pruner's Distiller name (``groups.DISTILLER_RANKED``): Filters/3D are
    dim-0 slices, Channels dim-1 slices, Rows the columns of a linear weight (its input features, as
    Distiller's ``rank_and_prune_rows`` ranks them); Blocks are Distiller's super-blocks (``depth``
    consecutive kernels of the flattened filter x channel order at one kernel position, or
    ``repetitions`` consecutive filters at one channel and position when ``depth`` is 1).
    """
    if t.dim() < 2:
        raise ValueError(f"{group_type} pruning needs a conv or linear weight (>= 2 dims), got shape {tuple(t.shape)}")
    g = _ranked_group(t, group_type)
    index = torch.arange(t.numel(), device=t.device).view(t.shape)
    if g.name != "blocks":
        return structure_view(index, g.name)
    _check_block_shape(block_shape)
    assert block_shape is not None
    reps, depth = block_shape[0], block_shape[1]
    if t.dim() != 4 or t.numel() % (reps * depth):
        raise ValueError(f"block shape {list(block_shape)} must divide the 4-D weight {tuple(t.shape)} exactly")
    f, c, kernel = t.shape[0], t.shape[1], t.shape[2] * t.shape[3]
    if depth > 1:
        view = index.reshape(f * c // (reps * depth), reps * depth, kernel)
    else:
        view = index.reshape(f // reps, reps, -1)
    return view.transpose(1, 2).reshape(-1, view.shape[1])  # each row: one block


def group_keep(t: torch.Tensor, level: float, group_type: str,
               block_shape: Sequence[int] | None = None) -> torch.Tensor:
    """Keep-vector over the structures of ``t``: drops ``int(level * count)`` of smallest L1 norm."""
    index = _group_index(t, group_type, block_shape)
    norms = _wide(t.detach().abs()).reshape(-1)[index].sum(dim=1)
    return _keep_all_but_lowest(norms, _count(level, index.shape[0]))


def expand_groups(t: torch.Tensor, keep: torch.Tensor, group_type: str,
                  block_shape: Sequence[int] | None = None) -> torch.Tensor:
    """The element mask of ``t`` for a keep-vector over its structures (e.g. a Leader's ranking)."""
    index = _group_index(t, group_type, block_shape)
    if keep.shape[0] != index.shape[0]:
        raise ValueError(f"the leader's ranking has {keep.shape[0]} {group_type.lower()}, this weight "
                         f"{index.shape[0]} (shape {tuple(t.shape)})")
    mask = torch.ones(t.numel(), dtype=torch.bool, device=t.device)
    mask[index[~keep.to(t.device)].reshape(-1)] = False
    return mask.view(t.shape)


def ranked_structure_mask(t: torch.Tensor, level: float, group_type: str,
                          block_shape: Sequence[int] | None = None) -> torch.Tensor:
    """Distiller's L1-ranked structure mask for any of its group types (``groups.DISTILLER_RANKED``;
    the slices as :func:`structure_mask`)."""
    g = _ranked_group(t, group_type) if t.dim() >= 2 else group(group_type, DISTILLER_RANKED)
    if g.name != "blocks":
        return structure_mask(t, level, g.name)
    return expand_groups(t, group_keep(t, level, group_type, block_shape), group_type, block_shape)


def _check_nm(n: int, m: int) -> None:
    if not (isinstance(n, int) and isinstance(m, int) and m >= 1 and 0 <= n <= m):
        raise ValueError(f"N:M needs integers 0 <= n <= m, m >= 1; got {n}:{m}")


def nm_mask(t: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` largest |w| of every ``m`` consecutive weights along the input dimension.

    Groups run along dim 1 (linear inputs, conv input channels) for each output row/filter and
    kernel position, as NVIDIA's 2:4 sparse tensor cores and apex ASP expect. Ties: lower index
    pruned first. Raises ValueError if the input dimension is not a multiple of ``m``.
    """
    _check_nm(n, m)
    if t.dim() < 2:
        raise ValueError(f"N:M pruning needs a conv or linear weight (>= 2 dims), got shape {tuple(t.shape)}")
    moved = t.detach().abs().movedim(1, -1)
    if moved.shape[-1] % m:
        raise ValueError(f"N:M {n}:{m} needs the input dimension (size {moved.shape[-1]}) "
                         f"to be a multiple of {m}; shape {tuple(t.shape)}")
    groups = moved.reshape(-1, m)
    keep = torch.ones(groups.shape, dtype=torch.bool, device=t.device)
    if n < m:
        lowest = torch.sort(groups, dim=1, stable=True).indices[:, : m - n]
        keep.scatter_(1, lowest, False)
    return keep.view(moved.shape).movedim(-1, 1).contiguous()


def random_mask(t: torch.Tensor, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Prune ``int(level * numel)`` elements chosen uniformly at random: the baseline that any
    criterion must beat. Reproducible through ``generator``."""
    n = t.numel()
    device = generator.device if generator is not None else torch.device("cpu")
    perm = torch.randperm(n, generator=generator, device=device)
    keep = torch.ones(n, dtype=torch.bool, device=device)
    keep[perm[: _count(level, n)]] = False
    return keep.view(t.shape).to(t.device)


# --------------------------------------------------------------------------- pruner classes


_is_glob = is_glob


class RulePruner(Generic[V]):
    """Maps parameter names to a setting; subclasses turn (tensor, setting) into a mask.

    Matching: an exact name wins and may name any parameter (a bias too); otherwise the first glob
    (``fnmatch``, case-sensitive, in the given order, ``'*'`` last as the default) that matches a
    prunable weight (conv/linear ``.weight``). Unknown exact names and globs that match nothing
    (other than ``'*'``) are errors, so a typo never silently prunes nothing.
    """

    def __init__(self, rules: Mapping[str, V]) -> None:
        if not rules:
            raise ValueError(f"{type(self).__name__} needs at least one parameter name or pattern")
        self.rules: dict[str, V] = dict(rules)
        globs = [p for p in self.rules if _is_glob(p) and p != "*"]
        self._globs = globs + (["*"] if "*" in self.rules else [])

    def _mask(self, tensor: torch.Tensor, setting: V, name: str) -> torch.Tensor:
        raise NotImplementedError

    def _setting(self, name: str) -> V | None:
        return rule_for(self.rules, name)

    def compute_mask(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """The mask this pruner gives parameter ``name`` with value ``tensor`` (nothing is stored).

        ValueError, naming the parameter, if no rule covers it or its shape is unsupported."""
        setting = self._setting(name)
        if setting is None:
            raise ValueError(f"{type(self).__name__} has no rule for parameter {name!r}")
        try:
            return self._mask(tensor, setting, name)
        except ValueError as err:
            raise ValueError(f"cannot prune parameter {name!r} with {type(self).__name__}: {err}") from None

    def targets(self, model: nn.Module) -> list[str]:
        """Names of the parameters of ``model`` this pruner applies to, in model order."""
        params = dict(model.named_parameters())
        unknown = [p for p in self.rules if not _is_glob(p) and p not in params]
        if unknown:
            raise ValueError(f"{type(self).__name__}: not parameters of the model: {', '.join(unknown)}")
        prunable = {n for n, _ in prunable_parameters(model)}
        chosen = [n for n in params if n in self.rules or (n in prunable and self._setting(n) is not None)]
        unused = [g for g in self._globs if g != "*" and not any(fnmatch.fnmatchcase(n, g) for n in prunable)]
        if unused:
            raise ValueError(f"{type(self).__name__}: patterns match no prunable weight: {', '.join(unused)}")
        return chosen

    def prune(self, model: nn.Module, masks: MaskSet, view: View | None = None) -> dict[str, float]:
        """Compute the masks of all target parameters, store them in ``masks`` (replacing earlier
        ones, as Distiller does), zero the weights, and return each parameter's sparsity.

        ``view`` gives what is ranked instead of a weight's value (the mask still applies to the weight).
        All masks are computed before any is stored, so an error leaves the model untouched."""
        if masks.model is not model:
            raise ValueError("the MaskSet belongs to a different model")
        params = dict(model.named_parameters())
        ranked = (lambda n: params[n]) if view is None else (lambda n: view(n, params[n]))
        new = {name: self.compute_mask(name, ranked(name)) for name in self.targets(model)}
        for name, mask in new.items():
            masks.set(name, mask)
        return {name: sparsity(params[name]) for name in new}


def weight_rules(weights: Sequence[str] | str, setting: V) -> dict[str, V]:
    """Distiller's ``weights:`` list (or one name) as rules that all carry one setting."""
    names = [weights] if isinstance(weights, str) else list(weights)
    return dict.fromkeys(names, setting)


class MagnitudeParameterPruner(RulePruner[float]):
    """Prune ``|w| <= threshold``; ``thresholds`` maps names/globs to a threshold, ``'*'`` = default."""

    def __init__(self, thresholds: Mapping[str, float]) -> None:
        super().__init__(thresholds)

    def _mask(self, tensor: torch.Tensor, setting: float, name: str) -> torch.Tensor:
        return threshold_mask(tensor, setting)


class SparsityLevelParameterPruner(RulePruner[float]):
    """Prune exactly ``int(level * n)`` smallest-|w| elements per parameter (``'*'`` = default)."""

    def __init__(self, levels: Mapping[str, float]) -> None:
        super().__init__(levels)

    def _mask(self, tensor: torch.Tensor, setting: float, name: str) -> torch.Tensor:
        return level_mask(tensor, setting)


class SensitivityPruner(RulePruner[float]):
    """Han et al.'s rule: prune ``|w| <= s * std(w)``, with ``s`` per name (``'*'`` = default).

    ``std`` is torch's default (unbiased) over the whole tensor, zeros included, like Distiller."""

    def __init__(self, sensitivities: Mapping[str, float]) -> None:
        super().__init__(sensitivities)

    def _mask(self, tensor: torch.Tensor, setting: float, name: str) -> torch.Tensor:
        std = tensor.detach().float().std().item() if tensor.numel() > 1 else 0.0
        return threshold_mask(tensor, setting * std)


class RankedStructures:
    """Distiller's ranked-structure options shared by the one-shot and AGP structure pruners.

    ``group_type``: Filters/3D, Channels, Rows (Distiller's ranked "Rows" are the columns of a
    linear weight, i.e. its input features) or Blocks (``kwargs: {block_shape: [...]}``).
    ``group_dependency: Leader``: the first name in ``weights`` is ranked and its structure mask
    decides for every weight in the list (layers coupled by a residual add lose the same filters).
    """

    rules: dict
    group_type: str
    group_dependency: str | None
    block_shape: list[int] | None
    _leader_keep: torch.Tensor | None = None

    def _init_ranked(self, group_type: str, group_dependency: str | None, kwargs: Mapping | None) -> None:
        group_type = distiller_name(group_type, DISTILLER_RANKED) or group_type
        if group_type not in RANKED_GROUP_TYPES:
            raise ValueError(f"group_type {group_type!r} is not supported; use one of "
                             f"{', '.join(RANKED_GROUP_TYPES)}")
        if group_dependency not in (None, "Leader"):
            raise ValueError(f"group_dependency {group_dependency!r} is not supported; use Leader")
        self.group_type, self.group_dependency = group_type, group_dependency
        self.block_shape = list((kwargs or {}).get("block_shape") or []) or None
        if group_type == "Blocks":
            _check_block_shape(self.block_shape)

    def _ranked_mask(self, tensor: torch.Tensor, level: float) -> torch.Tensor:
        if self._leader_keep is not None:
            return expand_groups(tensor, self._leader_keep, self.group_type, self.block_shape)
        return ranked_structure_mask(tensor, level, self.group_type, self.block_shape)

    def _rank_leader(self, model: nn.Module, level: float, view: View | None = None) -> None:
        self._leader_keep = None
        if self.group_dependency == "Leader":
            leader = next(iter(self.rules))
            try:
                tensor = model.get_parameter(leader)
            except AttributeError:
                raise ValueError(f"group_dependency Leader needs an exact parameter name first in weights, "
                                 f"got {leader!r}") from None
            tensor = view(leader, tensor) if view is not None else tensor
            self._leader_keep = group_keep(tensor, level, self.group_type, self.block_shape)


class L1RankedStructureParameterPruner(RankedStructures, RulePruner[float]):
    """Prune ``int(desired_sparsity * count)`` whole filters or channels of smallest L1 norm in
    each of ``weights`` (names or globs); also Distiller's Rows and Blocks, and Leader dependency."""

    def __init__(self, group_type: str, desired_sparsity: float, weights: Sequence[str] | str,
                 group_dependency: str | None = None, kwargs: Mapping | None = None) -> None:
        self._init_ranked(group_type, group_dependency, kwargs)
        _count(desired_sparsity, 0)
        super().__init__(weight_rules(weights, desired_sparsity))

    def _level(self, name: str) -> float:
        return float(self.rules[name]) if name in self.rules else float(next(iter(self.rules.values())))

    def prune(self, model: nn.Module, masks: MaskSet, view: View | None = None) -> dict[str, float]:
        self._rank_leader(model, self._level(next(iter(self.rules))), view)
        try:
            return super().prune(model, masks, view)
        finally:
            self._leader_keep = None

    def _mask(self, tensor: torch.Tensor, setting: float, name: str) -> torch.Tensor:
        return self._ranked_mask(tensor, setting)


class RandomLevelStructureParameterPruner(L1RankedStructureParameterPruner):
    """L1-ranked structure pruning at a level drawn uniformly from ``sparsity_range`` each time it
    prunes (Distiller's DropFilter-like regimen). One level per parameter, or one for the whole list
    with Leader; reproducible through ``seed``."""

    def __init__(self, group_type: str, sparsity_range: Sequence[float], weights: Sequence[str] | str,
                 group_dependency: str | None = None, kwargs: Mapping | None = None, seed: int = 0) -> None:
        low, high = (float(v) for v in sparsity_range)
        if not 0.0 <= low <= high < 1.0:
            raise ValueError(f"sparsity_range must be [low, high] with 0 <= low <= high < 1, got {sparsity_range}")
        super().__init__(group_type, 0.0, weights, group_dependency, kwargs)
        self.sparsity_range = (low, high)
        self._generator = torch.Generator().manual_seed(seed)
        self.levels: dict[str, float] = {}

    def _draw(self) -> float:
        low, high = self.sparsity_range
        return low + (high - low) * float(torch.rand((), generator=self._generator))

    def prune(self, model: nn.Module, masks: MaskSet, view: View | None = None) -> dict[str, float]:
        self.levels = {}
        if self.group_dependency == "Leader":
            level = self._draw()
            self.rules = dict.fromkeys(self.rules, level)
        return super().prune(model, masks, view)

    def _mask(self, tensor: torch.Tensor, setting: float, name: str) -> torch.Tensor:
        level = setting if self.group_dependency == "Leader" else self._draw()
        self.levels[name] = level
        return self._ranked_mask(tensor, level)


class SplicingPruner(RulePruner[float]):
    """Dynamic network surgery (Guo et al. 2016), as Distiller's SplicingPruner.

    With ``t = mean|w| + sensitivity * std|w|`` (both taken once, the first time a parameter is seen,
    like Distiller and the authors' Caffe code), weights with ``|w| < low_thresh_mult * t`` are
    pruned, weights with ``|w| >= hi_thresh_mult * t`` are spliced back (their mask turns True again)
    and the rest keep their current mask. ``sensitivity_multiplier`` > 0 grows the sensitivity
    linearly with the epochs since the policy started (:meth:`set_epoch`).
    """

    def __init__(self, sensitivities: Mapping[str, float], low_thresh_mult: float, hi_thresh_mult: float,
                 sensitivity_multiplier: float = 0.0) -> None:
        if not 0 <= low_thresh_mult <= hi_thresh_mult:
            raise ValueError(f"need 0 <= low_thresh_mult <= hi_thresh_mult, got {low_thresh_mult}, {hi_thresh_mult}")
        super().__init__(sensitivities)
        self.low_thresh_mult, self.hi_thresh_mult = float(low_thresh_mult), float(hi_thresh_mult)
        self.sensitivity_multiplier = float(sensitivity_multiplier)
        self.stats: dict[str, tuple[float, float]] = {}  # name -> (mean |w|, std |w|) at first sight
        self.current: dict[str, torch.Tensor] = {}
        self.growth = 1.0

    def set_epoch(self, epoch: int, starting_epoch: int, ending_epoch: int, frequency: int = 1) -> float:
        """Distiller's linearly growing sensitivity; returns the factor applied to the sensitivities."""
        self.growth = (epoch - starting_epoch) * self.sensitivity_multiplier + 1 if self.sensitivity_multiplier > 0 \
            else 1.0
        return self.growth

    def prune(self, model: nn.Module, masks: MaskSet, view: View | None = None) -> dict[str, float]:
        self.current = {n: masks.get(n) for n in masks.names()}
        return super().prune(model, masks, view)

    def _mask(self, tensor: torch.Tensor, setting: float, name: str) -> torch.Tensor:
        magnitude = tensor.detach().abs()
        if name not in self.stats:
            std = magnitude.float().std().item() if magnitude.numel() > 1 else 0.0
            self.stats[name] = (magnitude.float().mean().item(), std)
        mean, std = self.stats[name]
        base = mean + std * setting * self.growth
        current = self.current.get(name)
        keep = torch.ones_like(magnitude, dtype=torch.bool) if current is None else current.to(tensor.device).clone()
        keep[magnitude < base * self.low_thresh_mult] = False
        keep[magnitude >= base * self.hi_thresh_mult] = True
        return keep


class NMStructuredPruner(RulePruner[tuple[int, int]]):
    """N:M fine-grained structured sparsity (e.g. 2:4) on each of ``weights`` (names or globs)."""

    def __init__(self, n: int, m: int, weights: Sequence[str] | str) -> None:
        _check_nm(n, m)
        super().__init__(weight_rules(weights, (n, m)))

    def _mask(self, tensor: torch.Tensor, setting: tuple[int, int], name: str) -> torch.Tensor:
        return nm_mask(tensor, *setting)


class RandomPruner(RulePruner[float]):
    """Prune ``int(level * n)`` random elements of each of ``weights``: a baseline.

    Each parameter gets its own generator seeded from ``seed`` and its name (CRC32, stable across
    processes), so results are reproducible and same-shaped layers get different patterns."""

    def __init__(self, level: float, weights: Sequence[str] | str, seed: int = 0) -> None:
        _count(level, 0)
        super().__init__(weight_rules(weights, level))
        self.seed = seed

    def _mask(self, tensor: torch.Tensor, setting: float, name: str) -> torch.Tensor:
        generator = torch.Generator().manual_seed(zlib.crc32(f"{self.seed}:{name}".encode()))
        return random_mask(tensor, setting, generator)


# --------------------------------------------------------------------------- filters ranked by what they output


def _filter_mask(t: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The element mask of a conv weight that keeps the filters ``keep`` marks."""
    if keep.shape[0] != t.shape[0]:
        raise ValueError(f"{keep.shape[0]} filter scores for a weight with {t.shape[0]} filters")
    return keep.to(t.device).view(-1, *([1] * (t.dim() - 1))).expand(t.shape).contiguous()


def activation_keep(scores: torch.Tensor, level: float, prune_highest: bool) -> torch.Tensor:
    """Keep-vector over filters that drops ``int(level * count)`` of them by their activation ``scores``: the
    highest (APoZ: mostly-zero outputs) or the lowest (mean activation); ties prune the lower index first."""
    scores = scores.detach().double().flatten()
    return _keep_all_but_lowest(-scores if prune_highest else scores, _count(level, scores.numel()))


class FilterRanking:
    """Options shared by the filter pruners that rank by something other than the weights (activations, a
    random draw): ``group_type`` Filters/3D only, ``group_dependency: Leader`` (the first name's decision
    is every listed weight's, as Distiller's leader binary map)."""

    rules: dict
    group_type: str
    group_dependency: str | None
    _leader_keep: torch.Tensor | None = None

    def _init_filters(self, group_type: str, group_dependency: str | None) -> None:
        if group_type not in FILTER_GROUP_TYPES:
            raise ValueError(f"{type(self).__name__} prunes filters: group_type must be Filters or 3D, "
                             f"got {group_type!r}")
        if group_dependency not in (None, "Leader"):
            raise ValueError(f"group_dependency {group_dependency!r} is not supported; use Leader")
        self.group_type, self.group_dependency = group_type, group_dependency

    def _filter_keep(self, name: str, tensor: torch.Tensor, level: float) -> torch.Tensor:
        raise NotImplementedError

    def _filters_mask(self, tensor: torch.Tensor, level: float, name: str) -> torch.Tensor:
        if tensor.dim() != 4:
            raise ValueError(f"filter ranking needs a conv weight (4-D), got shape {tuple(tensor.shape)}")
        if self.group_dependency == "Leader":
            if self._leader_keep is None:
                leader = next(iter(self.rules))
                self._leader_keep = self._filter_keep(leader, tensor, level)
            return _filter_mask(tensor, self._leader_keep)
        return _filter_mask(tensor, self._filter_keep(name, tensor, level))

    def prune(self, model: nn.Module, masks: MaskSet, view: View | None = None) -> dict[str, float]:
        self._leader_keep = None
        try:
            return super().prune(model, masks, view)  # type: ignore[misc]
        finally:
            self._leader_keep = None


#: per-filter activation statistic of a weight (its name) -> scores, collected by forward hooks
Statistics = Callable[[str], torch.Tensor]


class ActivationRanking(FilterRanking):
    """Rank a conv's filters by a statistic of their output channels over training batches (Distiller's
    ``ActivationRankedFilterPruner``). The scheduler collects the statistic with forward hooks
    (:mod:`pruning_core.activation_stats`) and hands it over as :attr:`statistics` before each prune."""

    #: the statistic (``activation_stats.STATISTICS``) and which end of it is pruned
    statistic: str = ""
    prune_highest: bool = True
    statistics: Statistics | None = None

    def _filter_keep(self, name: str, tensor: torch.Tensor, level: float) -> torch.Tensor:
        if self.statistics is None:
            raise ValueError(f"{type(self).__name__} ranks filters by their activations ({self.statistic}): "
                             "it needs statistics from forward passes (the CompressionScheduler collects them)")
        return activation_keep(self.statistics(name), level, self.prune_highest)


class _ActivationRankedFilterPruner(ActivationRanking, RulePruner[float]):
    """One-shot: prune ``int(desired_sparsity * filters)`` filters of each of ``weights`` by the statistic."""

    def __init__(self, group_type: str, desired_sparsity: float, weights: Sequence[str] | str,
                 group_dependency: str | None = None) -> None:
        self._init_filters(group_type, group_dependency)
        _count(desired_sparsity, 0)
        super().__init__(weight_rules(weights, desired_sparsity))

    def _mask(self, tensor: torch.Tensor, setting: float, name: str) -> torch.Tensor:
        return self._filters_mask(tensor, setting, name)


class ActivationAPoZRankedFilterPruner(_ActivationRankedFilterPruner):
    """Network trimming (Hu et al. 2016): prune the filters whose ReLU outputs are most often zero (the
    highest average percentage of zeros, APoZ), as Distiller ranks them."""

    statistic = "apoz"
    prune_highest = True


class ActivationMeanRankedFilterPruner(_ActivationRankedFilterPruner):
    """Prune the filters whose output channels have the lowest mean activation (Molchanov et al. 2017).

    Distiller's code keeps ``argsort(means)[:-k]``, i.e. drops the *highest* means, the opposite of the
    paper's criterion it cites; prunescope drops the lowest, as the paper does."""

    statistic = "mean"
    prune_highest = False


def bernoulli_keep(count: int, keep_probability: float, generator: torch.Generator) -> torch.Tensor:
    """Keep-vector of ``count`` independent Bernoulli(``keep_probability``) draws (DropFilter's draw)."""
    return torch.bernoulli(torch.full((count,), float(keep_probability)), generator=generator).bool()


class BernoulliDrop(FilterRanking):
    """Drop each filter independently with probability ``level`` (Distiller's ``BernoulliFilterPruner``):
    the number dropped is random, its expectation ``level * filters``. :attr:`scales` holds, per weight,
    ``filters / kept``, the factor Distiller multiplies the kept filters by so the layer's expected output
    stays the same; the scheduler applies it only on a forward-only, double-copy policy (where the dense
    weights are restored after the step; multiplying a kept weight in place at every step, as Distiller
    does otherwise, would grow it without bound)."""

    seed: int
    _generator: torch.Generator
    scales: dict[str, float]

    def _init_draws(self, seed: int) -> None:
        self.seed = seed
        self._generator = torch.Generator().manual_seed(seed)
        self.scales = {}

    def _filter_keep(self, name: str, tensor: torch.Tensor, level: float) -> torch.Tensor:
        keep = bernoulli_keep(tensor.shape[0], 1.0 - level, self._generator)
        kept = int(keep.sum())
        self.scales[name] = tensor.shape[0] / kept if kept else 1.0
        return keep

    def _filters_mask(self, tensor: torch.Tensor, level: float, name: str) -> torch.Tensor:
        mask = super()._filters_mask(tensor, level, name)
        if self.group_dependency == "Leader":
            leader = next(iter(self.rules))
            self.scales[name] = self.scales.get(leader, 1.0)
        return mask


class BernoulliFilterPruner(BernoulliDrop, RulePruner[float]):
    """Drop each filter of ``weights`` with probability ``desired_sparsity`` at every prune (DropFilter);
    reproducible through ``seed``."""

    def __init__(self, group_type: str, desired_sparsity: float, weights: Sequence[str] | str,
                 group_dependency: str | None = None, seed: int = 0) -> None:
        self._init_filters(group_type, group_dependency)
        self._init_draws(seed)
        _count(desired_sparsity, 0)
        super().__init__(weight_rules(weights, desired_sparsity))

    def _mask(self, tensor: torch.Tensor, setting: float, name: str) -> torch.Tensor:
        return self._filters_mask(tensor, setting, name)


# --------------------------------------------------------------------------- recurrent networks


class BaiduRNNPruner(RulePruner[bool]):
    """Narang et al. 2017 ("Exploring Sparsity in Recurrent Neural Networks"), with Distiller's epoch formula.

    ``ramp_epoch = starting_epoch + ramp_epoch_offset``; once per policy
    ``start_slope = 2 q freq / (2 (ramp_epoch - starting_epoch) + 3 (ending_epoch - ramp_epoch))`` and
    ``ramp_slope = start_slope * ramp_slope_mult``; at epoch e the threshold is
    ``start_slope (e - starting_epoch + 1) / freq`` before the ramp epoch and
    ``(start_slope (ramp_epoch - starting_epoch + 1) + ramp_slope (e - ramp_epoch + 1)) / freq`` from it on;
    weights with ``|w| <= threshold`` are pruned (Distiller keeps ``|w| > threshold``).
    """

    def __init__(self, q: float, ramp_epoch_offset: int, ramp_slope_mult: float,
                 weights: Sequence[str] | str) -> None:
        if q < 0 or ramp_epoch_offset < 0 or ramp_slope_mult < 0:
            raise ValueError(f"BaiduRNNPruner needs q, ramp_epoch_offset and ramp_slope_mult >= 0, got {q}, "
                             f"{ramp_epoch_offset}, {ramp_slope_mult}")
        super().__init__(weight_rules(weights, True))
        self.q, self.ramp_epoch_offset, self.ramp_slope_mult = float(q), int(ramp_epoch_offset), float(ramp_slope_mult)
        self.start_slope: float | None = None
        self.ramp_slope: float | None = None
        self.threshold: float | None = None

    def set_epoch(self, epoch: int, starting_epoch: int, ending_epoch: int, frequency: int = 1) -> float:
        """The threshold the next :meth:`prune` uses (the slopes are fixed the first time, as Distiller)."""
        ramp_epoch = starting_epoch + self.ramp_epoch_offset
        if self.start_slope is None:
            denominator = 2 * (ramp_epoch - starting_epoch) + 3 * (ending_epoch - ramp_epoch)
            if denominator <= 0:
                raise ValueError(f"BaiduRNNPruner: ramp_epoch_offset {self.ramp_epoch_offset} leaves no epochs "
                                 f"to prune in {starting_epoch}..{ending_epoch}")
            self.start_slope = 2 * self.q * frequency / denominator
            self.ramp_slope = self.start_slope * self.ramp_slope_mult
        assert self.ramp_slope is not None
        if epoch < ramp_epoch:
            self.threshold = self.start_slope * (epoch - starting_epoch + 1) / frequency
        else:
            self.threshold = (self.start_slope * (ramp_epoch - starting_epoch + 1)
                              + self.ramp_slope * (epoch - ramp_epoch + 1)) / frequency
        return self.threshold

    def _mask(self, tensor: torch.Tensor, setting: bool, name: str) -> torch.Tensor:
        if self.threshold is None:
            raise ValueError("BaiduRNNPruner's threshold grows with the epochs: call set_epoch first")
        return threshold_mask(tensor, self.threshold)
