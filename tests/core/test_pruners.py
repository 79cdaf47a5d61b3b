"""Pruners: exact counts, which weights go, ties, name matching, and the errors Distiller lacked."""

from collections import OrderedDict

import pytest
import torch
from torch import nn

from pruning_core.masks import MaskSet
from pruning_core.pruners import (
    L1RankedStructureParameterPruner,
    MagnitudeParameterPruner,
    NMStructuredPruner,
    RandomPruner,
    SensitivityPruner,
    SparsityLevelParameterPruner,
    level_mask,
    nm_mask,
    random_mask,
    structure_mask,
    threshold_mask,
)


def pruned_indices(mask: torch.Tensor) -> set[int]:
    return set(torch.nonzero(~mask.flatten()).flatten().tolist())


# --------------------------------------------------------------------------- level


def test_level_prunes_exactly_the_smallest() -> None:
    gen = torch.Generator().manual_seed(0)
    magnitudes = torch.randperm(1000, generator=gen).float() + 1  # 1..1000, each once
    signs = torch.where(torch.rand(1000, generator=gen) < 0.5, -1.0, 1.0)
    t = magnitudes * signs
    mask = level_mask(t, 0.3)
    assert mask.dtype == torch.bool and mask.shape == t.shape
    assert int((~mask).sum()) == 300
    assert pruned_indices(mask) == set(torch.nonzero(magnitudes <= 300).flatten().tolist())


def test_level_all_equal_prunes_the_lowest_indices() -> None:
    mask = level_mask(torch.ones(10, 100), 0.3)
    assert pruned_indices(mask) == set(range(300))
    alternating = torch.tensor([(-1.0) ** i for i in range(1000)])  # |w| all equal, signs differ
    assert pruned_indices(level_mask(alternating, 0.3)) == set(range(300))


def test_level_with_repeated_values_breaks_ties_by_index() -> None:
    t = (torch.arange(1000) % 4).float()  # 0,1,2,3,0,1,... 250 of each
    mask = level_mask(t, 0.3)
    zeros = set(range(0, 1000, 4))  # all 250 zeros go first...
    first_ones = {1 + 4 * j for j in range(50)}  # ...then the 50 ones of lowest index
    assert pruned_indices(mask) == zeros | first_ones


def test_level_count_uses_int_of_the_float_product() -> None:
    assert 0.29 * 100 < 29
    assert int((~level_mask(torch.arange(1.0, 101.0), 0.29)).sum()) == 28


def test_level_rounding_to_zero_prunes_nothing_and_bad_levels_raise() -> None:
    t = torch.randn(100)
    assert bool(level_mask(t, 0.001).all())
    assert bool(level_mask(t, 0.0).all())
    assert not bool(level_mask(t, 1.0).any())
    with pytest.raises(ValueError, match="outside"):
        level_mask(t, 1.5)


# --------------------------------------------------------------------------- threshold / sensitivity


def test_threshold_prunes_at_or_below() -> None:
    t = torch.tensor([-0.5, 0.2, 0.5, 0.7, 0.0, -0.6])
    assert threshold_mask(t, 0.5).tolist() == [False, False, False, True, False, True]


def test_sensitivity_threshold_is_s_times_std() -> None:
    model = nn.Sequential(nn.Linear(5, 1, bias=False))
    with torch.no_grad():
        # mean 0, squares sum to 100, unbiased variance 100 / 4 = 25: std = 5
        model[0].weight.copy_(torch.tensor([[7.0, -7.0, 1.0, -1.0, 0.0]]))
    assert SensitivityPruner({"*": 0.1}).compute_mask("0.weight", model[0].weight).tolist() == [
        [True, True, True, True, False]  # threshold 0.5
    ]
    assert SensitivityPruner({"*": 0.2}).compute_mask("0.weight", model[0].weight).tolist() == [
        [True, True, False, False, False]  # threshold 1.0: |w| <= 1 goes
    ]
    result = SensitivityPruner({"0.weight": 1.0}).prune(model, MaskSet(model))  # threshold 5
    assert result == {"0.weight": pytest.approx(0.6)}
    assert model[0].weight.tolist() == [[7.0, -7.0, 0.0, 0.0, 0.0]]


# --------------------------------------------------------------------------- name matching


def two_layer() -> nn.Sequential:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    with torch.no_grad():
        for layer in model:
            layer.weight.copy_(torch.arange(1.0, 17.0).view(4, 4) / 10)  # 0.1 .. 1.6
            layer.bias.fill_(0.05)
    return model


def test_magnitude_star_is_the_default() -> None:
    model = two_layer()
    result = MagnitudeParameterPruner({"0.weight": 0.5, "*": 0.1}).prune(model, MaskSet(model))
    assert result == {"0.weight": pytest.approx(5 / 16), "1.weight": pytest.approx(1 / 16)}
    assert torch.all(model[0].bias == 0.05) and torch.all(model[1].bias == 0.05)  # '*' skips biases


def numbered() -> nn.Module:
    return nn.Sequential(OrderedDict(features=nn.Sequential(*[nn.Linear(4, 4) for _ in range(11)])))


def test_exact_names_never_match_by_substring() -> None:
    """Distiller's bug: a rule for 'features.10.weight' also pruned 'features.0.weight'."""
    for pruner in (
        SparsityLevelParameterPruner({"features.10.weight": 0.5}),
        L1RankedStructureParameterPruner("Filters", 0.5, ["features.10.weight"]),
        MagnitudeParameterPruner({"features.10.weight": 10.0}),
    ):
        model = numbered()
        original = model.features[0].weight.detach().clone()
        masks = MaskSet(model)
        assert list(pruner.prune(model, masks)) == ["features.10.weight"]
        assert masks.names() == ["features.10.weight"]
        assert torch.equal(model.features[0].weight, original)


def test_globs_match_prunable_weights() -> None:
    model = numbered()
    result = SparsityLevelParameterPruner({"features.1*.weight": 0.5}).prune(model, MaskSet(model))
    assert list(result) == ["features.1.weight", "features.10.weight"]
    # The first matching glob wins; '*' is the fallback whatever its position.
    pruner = SparsityLevelParameterPruner({"*": 0.25, "features.?.weight": 0.5})
    assert pruner.compute_mask("features.3.weight", torch.randn(4, 4)).sum() == 8
    assert pruner.compute_mask("features.10.weight", torch.randn(4, 4)).sum() == 12


def test_unknown_names_and_empty_globs_are_errors() -> None:
    model = numbered()
    with pytest.raises(ValueError, match="features.11.weight"):
        SparsityLevelParameterPruner({"features.11.weight": 0.5}).prune(model, MaskSet(model))
    with pytest.raises(ValueError, match="classifier"):
        SparsityLevelParameterPruner({"classifier.*": 0.5}).prune(model, MaskSet(model))
    with pytest.raises(ValueError, match="no rule"):
        SparsityLevelParameterPruner({"features.0.weight": 0.5}).compute_mask("x", torch.ones(2))
    with pytest.raises(ValueError, match="different model"):
        SparsityLevelParameterPruner({"*": 0.5}).prune(model, MaskSet(numbered()))


def test_level_pruner_on_a_model() -> None:
    model = two_layer()
    masks = MaskSet(model)
    result = SparsityLevelParameterPruner({"0.weight": 0.3, "0.bias": 0.5}).prune(model, masks)
    assert result == {"0.weight": pytest.approx(4 / 16), "0.bias": 0.5}  # int(0.3 * 16) = 4
    assert model[0].weight.flatten()[:4].tolist() == [0.0] * 4  # 0.1 .. 0.4 are the smallest
    assert model[0].bias.tolist() == [0.0, 0.0, pytest.approx(0.05), pytest.approx(0.05)]  # ties: low index
    assert set(masks.names()) == {"0.weight", "0.bias"}


# --------------------------------------------------------------------------- structures


def ranked(shape: tuple[int, ...], dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random tensor whose slices along ``dim`` have L1 norms rank+1 for a random rank per slice."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.randn(shape, generator=gen)
    rank = torch.randperm(shape[dim], generator=gen)
    view = [1] * len(shape)
    view[dim] = shape[dim]
    other = [d for d in range(len(shape)) if d != dim]
    t = t / t.abs().sum(dim=other, keepdim=True) * (rank.float() + 1).view(view)
    return t, rank


def test_filter_pruning_zeroes_the_smallest_l1_filters() -> None:
    model = nn.Sequential(nn.Conv2d(3, 64, 3))
    w, rank = ranked((64, 3, 3, 3), 0, seed=0)
    with torch.no_grad():
        model[0].weight.copy_(w)
    result = L1RankedStructureParameterPruner("Filters", 0.5, ["0.weight"]).prune(model, MaskSet(model))
    assert result == {"0.weight": 0.5}
    weight = model[0].weight.detach()
    zero_filters = (weight.abs().sum(dim=(1, 2, 3)) == 0).nonzero().flatten()
    assert zero_filters.tolist() == sorted((rank < 32).nonzero().flatten().tolist())
    assert torch.equal(weight[rank >= 32], w[rank >= 32])  # survivors untouched


def test_channel_pruning_zeroes_the_smallest_l1_channels() -> None:
    w, rank = ranked((8, 64, 3, 3), 1, seed=1)
    mask = structure_mask(w, 0.5, "channels")
    assert mask.shape == w.shape
    assert torch.all(mask == mask[:1, :, :1, :1])  # whole channels
    assert (~mask[0, :, 0, 0]).nonzero().flatten().tolist() == sorted((rank < 32).nonzero().flatten().tolist())


def test_structure_ties_by_index_and_count_rounding() -> None:
    mask = structure_mask(torch.ones(10, 4, 3, 3), 0.35, "filters")  # int(3.5) = 3
    assert (~mask.flatten(1).all(dim=1)).nonzero().flatten().tolist() == [0, 1, 2]
    assert int((~structure_mask(torch.ones(4, 100), 0.29, "channels")[0]).sum()) == 28
    assert bool(structure_mask(torch.randn(8, 3, 3, 3), 0.1, "filters").all())  # int(0.8) = 0
    linear = structure_mask(torch.tensor([[3.0, 0.0], [1.0, 1.0], [0.5, 0.1]]), 0.5, "filters")
    assert linear.tolist() == [[True, True], [True, True], [False, False]]  # output row 2


def test_structure_pruner_rejects_a_bias_naming_it() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3))
    masks = MaskSet(model)
    pruner = L1RankedStructureParameterPruner("Filters", 0.5, ["0.bias"])
    with pytest.raises(ValueError, match=r"'0\.bias'.*filters pruning needs .* got shape \(8,\)"):
        pruner.prune(model, masks)
    assert len(masks) == 0
    with pytest.raises(ValueError, match="group_type"):
        L1RankedStructureParameterPruner("Kernels", 0.5, ["0.weight"])


# --------------------------------------------------------------------------- N:M


def test_2_4_keeps_the_two_largest_of_each_group() -> None:
    t = torch.tensor([[1.0, -4.0, 3.0, 2.0, 0.5, 0.1, -0.2, 9.0]])
    assert nm_mask(t, 2, 4).tolist() == [[False, True, True, False, True, False, False, True]]
    assert nm_mask(torch.ones(1, 4), 2, 4).tolist() == [[False, False, True, True]]  # ties: low index goes
    assert nm_mask(t, 1, 2).tolist() == [[False, True, True, False, True, False, False, True]]


def test_2_4_on_random_linear_and_conv() -> None:
    gen = torch.Generator().manual_seed(0)
    linear = torch.randn(16, 32, generator=gen)
    mask = nm_mask(linear, 2, 4)
    groups, kept = linear.abs().view(-1, 4), mask.view(-1, 4)
    assert torch.all(kept.sum(dim=1) == 2)
    assert torch.all(groups[kept].view(-1, 2).min(dim=1).values >= groups[~kept].view(-1, 2).max(dim=1).values)

    conv = torch.randn(4, 8, 3, 3, generator=gen)
    mask = nm_mask(conv, 2, 4)
    along_in = mask.permute(0, 2, 3, 1).reshape(-1, 4)  # groups run along input channels
    assert torch.all(along_in.sum(dim=1) == 2)
    assert torch.equal(mask[1, :4, 2, 0], nm_mask(conv[1, :4, 2, 0].view(1, 4), 2, 4)[0])


def test_nm_pruner_errors_clearly() -> None:
    model = nn.Sequential(nn.Linear(6, 4))
    with pytest.raises(ValueError, match=r"'0\.weight'.*input dimension \(size 6\).*multiple of 4"):
        NMStructuredPruner(2, 4, ["0.weight"]).prune(model, MaskSet(model))
    with pytest.raises(ValueError, match="0 <= n <= m"):
        NMStructuredPruner(5, 4, ["0.weight"])
    model = nn.Sequential(nn.Linear(8, 4))
    assert NMStructuredPruner(2, 4, "0.weight").prune(model, MaskSet(model)) == {"0.weight": 0.5}


# --------------------------------------------------------------------------- random


def test_random_mask_count_and_seed() -> None:
    t = torch.randn(40, 25)
    first = random_mask(t, 0.3, torch.Generator().manual_seed(7))
    assert int((~first).sum()) == 300
    assert torch.equal(first, random_mask(t, 0.3, torch.Generator().manual_seed(7)))
    assert not torch.equal(first, random_mask(t, 0.3, torch.Generator().manual_seed(8)))


def test_random_pruner_is_deterministic_per_seed_and_name() -> None:
    def run(seed: int) -> dict[str, torch.Tensor]:
        model = nn.Sequential(nn.Linear(20, 10), nn.Linear(20, 10))
        masks = MaskSet(model)
        assert RandomPruner(0.3, ["*"], seed=seed).prune(model, masks) == {"0.weight": 0.3, "1.weight": 0.3}
        return masks.state_dict()

    a, b, c = run(0), run(0), run(1)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not torch.equal(a["0.weight"], c["0.weight"])
    assert not torch.equal(a["0.weight"], a["1.weight"])  # same shape, different pattern
