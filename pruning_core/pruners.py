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
from collections.abc import Mapping, Sequence
from typing import Generic, TypeVar

import torch
from torch import nn

from .masks import MaskSet
from .metrics import prunable_parameters, sparsity

V = TypeVar("V")


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


_GROUP_DIMS = {"filters": 0, "channels": 1}


def structure_mask(t: torch.Tensor, level: float, group: str) -> torch.Tensor:
    """Prune ``int(level * count)`` whole filters (dim 0) or channels (dim 1) of smallest L1 norm.

    Works for any weight with at least 2 dims (conv filters, linear output rows/input columns).
    Ranking by L1 norm equals Distiller's ranking by mean |w| within a tensor; ties go by index.
    """
    key = group.lower()
    if key not in _GROUP_DIMS:
        raise ValueError(f"group {group!r} is not supported; use 'filters' or 'channels'")
    if t.dim() < 2:
        raise ValueError(f"{key} pruning needs a conv or linear weight (>= 2 dims), "
                         f"got shape {tuple(t.shape)}")
    dim = _GROUP_DIMS[key]
    count = t.shape[dim]
    norms = _wide(t.detach().abs()).transpose(0, dim).reshape(count, -1).sum(dim=1)
    keep = _keep_all_but_lowest(norms, _count(level, count))
    shape = [1] * t.dim()
    shape[dim] = count
    return keep.view(shape).expand(t.shape).contiguous()


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


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


class _RulePruner(Generic[V]):
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
        if name in self.rules:
            return self.rules[name]
        for pattern in self._globs:
            if fnmatch.fnmatchcase(name, pattern):
                return self.rules[pattern]
        return None

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

    def prune(self, model: nn.Module, masks: MaskSet) -> dict[str, float]:
        """Compute the masks of all target parameters, store them in ``masks`` (replacing earlier
        ones, as Distiller does), zero the weights, and return each parameter's sparsity.

        All masks are computed before any is stored, so an error leaves the model untouched."""
        if masks.model is not model:
            raise ValueError("the MaskSet belongs to a different model")
        params = dict(model.named_parameters())
        new = {name: self.compute_mask(name, params[name]) for name in self.targets(model)}
        for name, mask in new.items():
            masks.set(name, mask)
        return {name: sparsity(params[name]) for name in new}


def _weight_rules(weights: Sequence[str] | str, setting: V) -> dict[str, V]:
    names = [weights] if isinstance(weights, str) else list(weights)
    return dict.fromkeys(names, setting)


class MagnitudeParameterPruner(_RulePruner[float]):
    """Prune ``|w| <= threshold``; ``thresholds`` maps names/globs to a threshold, ``'*'`` = default."""

    def __init__(self, thresholds: Mapping[str, float]) -> None:
        super().__init__(thresholds)

    def _mask(self, tensor: torch.Tensor, setting: float, name: str) -> torch.Tensor:
        return threshold_mask(tensor, setting)


class SparsityLevelParameterPruner(_RulePruner[float]):
    """Prune exactly ``int(level * n)`` smallest-|w| elements per parameter (``'*'`` = default)."""

    def __init__(self, levels: Mapping[str, float]) -> None:
        super().__init__(levels)

    def _mask(self, tensor: torch.Tensor, setting: float, name: str) -> torch.Tensor:
        return level_mask(tensor, setting)


class SensitivityPruner(_RulePruner[float]):
    """Han et al.'s rule: prune ``|w| <= s * std(w)``, with ``s`` per name (``'*'`` = default).

    ``std`` is torch's default (unbiased) over the whole tensor, zeros included, like Distiller."""

    def __init__(self, sensitivities: Mapping[str, float]) -> None:
        super().__init__(sensitivities)

    def _mask(self, tensor: torch.Tensor, setting: float, name: str) -> torch.Tensor:
        std = tensor.detach().float().std().item() if tensor.numel() > 1 else 0.0
        return threshold_mask(tensor, setting * std)


class L1RankedStructureParameterPruner(_RulePruner[float]):
    """Prune ``int(desired_sparsity * count)`` whole filters or channels of smallest L1 norm in
    each of ``weights`` (names or globs)."""

    def __init__(self, group_type: str, desired_sparsity: float, weights: Sequence[str] | str) -> None:
        if group_type.lower() not in _GROUP_DIMS:
            raise ValueError(f"group_type {group_type!r} is not supported; use 'Filters' or 'Channels'")
        _count(desired_sparsity, 0)
        super().__init__(_weight_rules(weights, desired_sparsity))
        self.group_type = group_type

    def _mask(self, tensor: torch.Tensor, setting: float, name: str) -> torch.Tensor:
        return structure_mask(tensor, setting, self.group_type)


class NMStructuredPruner(_RulePruner[tuple[int, int]]):
    """N:M fine-grained structured sparsity (e.g. 2:4) on each of ``weights`` (names or globs)."""

    def __init__(self, n: int, m: int, weights: Sequence[str] | str) -> None:
        _check_nm(n, m)
        super().__init__(_weight_rules(weights, (n, m)))

    def _mask(self, tensor: torch.Tensor, setting: tuple[int, int], name: str) -> torch.Tensor:
        return nm_mask(tensor, *setting)


class RandomPruner(_RulePruner[float]):
    """Prune ``int(level * n)`` random elements of each of ``weights``: a baseline.

    Each parameter gets its own generator seeded from ``seed`` and its name (CRC32, stable across
    processes), so results are reproducible and same-shaped layers get different patterns."""

    def __init__(self, level: float, weights: Sequence[str] | str, seed: int = 0) -> None:
        _count(level, 0)
        super().__init__(_weight_rules(weights, level))
        self.seed = seed

    def _mask(self, tensor: torch.Tensor, setting: float, name: str) -> torch.Tensor:
        generator = torch.Generator().manual_seed(zlib.crc32(f"{self.seed}:{name}".encode()))
        return random_mask(tensor, setting, generator)
