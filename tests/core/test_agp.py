"""AGP target sparsity equals Distiller's formula on hand-computed cases; AGP masks use pruners' rules."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
from torch import nn

from pruning_core.agp import AutomatedGradualPruner, L1RankedStructureParameterPruner_AGP, agp_sparsity
from pruning_core.masks import MaskSet
from pruning_core.pruners import level_mask, structure_mask


def _cubic(si: str, sf: str, t: int, t0: int, span: int) -> float:
    """s_f + (s_i - s_f) * (1 - (t - t0)/span)^3 in exact fractions."""
    si_, sf_ = Fraction(si), Fraction(sf)
    return float(sf_ + (si_ - sf_) * (1 - Fraction(t - t0, span)) ** 3)


# (initial, final, epoch, start, end, freq, expected): expected worked out by hand
CASES = [
    (0.05, 0.60, 0, 0, 16, 2, 0.05),                   # first epoch: the initial sparsity
    (0.05, 0.60, 14, 0, 16, 2, 0.60),                  # span = (15 // 2) * 2 = 14: the last active epoch
    (0.05, 0.60, 2, 0, 16, 2, 0.6 - 0.55 * 216 / 343),  # (1 - 2/14)^3 = (6/7)^3 = 216/343
    (0.05, 0.60, 7, 0, 16, 2, 0.6 - 0.55 / 8),         # halfway: (1/2)^3
    (0.05, 0.80, 0, 0, 35, 1, 0.05),                   # resnet50 conv_pruner
    (0.05, 0.80, 17, 0, 35, 1, 0.8 - 0.75 / 8),        # span 34, halfway
    (0.05, 0.80, 34, 0, 35, 1, 0.80),
    (0.05, 0.80, 1, 1, 35, 1, 0.05),                   # fc_pruner starts at 1: span 33
    (0.05, 0.80, 12, 1, 35, 1, 0.8 - 0.75 * (2 / 3) ** 3),  # (1 - 11/33)^3 = (2/3)^3
    (0.10, 0.50, 10, 0, 30, 2, 0.5 - 0.4 * (9 / 14) ** 3),  # span (29 // 2) * 2 = 28: (1 - 10/28)^3
    (0.0, 0.9, 3, 0, 4, 1, 0.9),                       # span 3: epoch 3 is the last
    (0.0, 0.9, 1, 0, 4, 1, 0.9 - 0.9 * 8 / 27),        # (2/3)^3
    (0.05, 0.70, 30, 30, 50, 2, 0.05),                 # resnet20 fine_pruner, span (19 // 2) * 2 = 18
    (0.05, 0.70, 39, 30, 50, 2, 0.7 - 0.65 / 8),       # (1 - 9/18)^3
    (0.05, 0.70, 48, 30, 50, 2, 0.70),
    (0.05, 0.70, 60, 30, 50, 2, 0.70),                 # after the span: clamped to final
]


@pytest.mark.parametrize("si, sf, t, start, end, freq, expected", CASES)
def test_agp_target_matches_hand_computed(si: float, sf: float, t: int, start: int, end: int, freq: int,
                                          expected: float) -> None:
    assert agp_sparsity(si, sf, t, start, end, freq) == pytest.approx(expected, abs=1e-12)
    span = ((end - start - 1) // freq) * freq
    assert agp_sparsity(si, sf, t, start, end, freq) == pytest.approx(
        _cubic(str(si), str(sf), min(t, start + span), start, span), abs=1e-12)


def test_agp_reaches_final_on_last_active_epoch() -> None:
    for start, end, freq in [(0, 10, 3), (2, 9, 2), (0, 16, 2), (5, 7, 1)]:
        last = list(range(start, end, freq))[-1]
        assert agp_sparsity(0.1, 0.7, last, start, end, freq) == pytest.approx(0.7)


def test_agp_span_zero_is_an_error() -> None:
    with pytest.raises(ValueError, match="span"):
        agp_sparsity(0.1, 0.5, 0, 0, 1, 1)


def test_agp_rejects_final_below_initial() -> None:
    with pytest.raises(ValueError):
        AutomatedGradualPruner(0.5, 0.2, ["w"])


def test_element_agp_uses_level_mask() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 10))
    masks = MaskSet(model)
    pruner = AutomatedGradualPruner(0.05, 0.8, ["0.weight"])
    weight = model[0].weight.detach().clone()
    level = pruner.set_epoch(2, 0, 8, 2)  # span 6: (1 - 1/3)^3
    assert level == pytest.approx(0.8 - 0.75 * 8 / 27)
    pruner.prune(model, masks)
    assert torch.equal(masks.get("0.weight"), level_mask(weight, level))
    assert int((model[0].weight == 0).sum()) == int(level * 200)


def test_structured_agp_uses_structure_mask() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 10, 3))
    masks = MaskSet(model)
    pruner = L1RankedStructureParameterPruner_AGP(0.1, 0.5, "Filters", "0.weight")
    weight = model[0].weight.detach().clone()
    pruner.set_epoch(6, 0, 8, 2)
    pruner.prune(model, masks)
    assert torch.equal(masks.get("0.weight"), structure_mask(weight, 0.5, "filters"))
    assert int((model[0].weight.flatten(1).abs().sum(1) == 0).sum()) == 5


def test_structured_agp_rejects_unknown_group() -> None:
    with pytest.raises(ValueError, match="Filters"):
        L1RankedStructureParameterPruner_AGP(0.1, 0.5, "Kernels", ["w"])
