"""Sparsity metrics on tensors small enough to count by hand."""

import math

import pytest
import torch
from torch import nn

from pruning_core.metrics import (
    density,
    format_summary,
    model_sparsity,
    prunable_parameters,
    sparsity,
    sparsity_summary,
    structure_sparsity,
)

# 2 output rows x 3 input columns: row 0 is all zero, column 1 is all zero; 4 zeros of 6.
LINEAR = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 2.0]])


def conv_weight() -> torch.Tensor:
    """3 filters x 2 channels x 2 x 2; only kernels (1, 0) (all four) and (2, 0) (one) are non-zero."""
    w = torch.zeros(3, 2, 2, 2)
    w[1, 0] = 1.0
    w[2, 0, 0, 0] = 5.0
    return w


def test_sparsity_and_density() -> None:
    t = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    assert sparsity(t) == 0.75
    assert density(t) == 0.25
    assert sparsity(LINEAR) == pytest.approx(4 / 6)
    assert density(LINEAR) == pytest.approx(2 / 6)
    assert sparsity(torch.empty(0)) == 0.0
    assert sparsity(-torch.zeros(3)) == 1.0  # -0.0 is zero


def test_linear_rows_and_cols() -> None:
    assert structure_sparsity(LINEAR, "rows") == 0.5  # row 0 of 2
    assert structure_sparsity(LINEAR, "cols") == pytest.approx(1 / 3)  # column 1 of 3
    assert structure_sparsity(LINEAR, "filters") == 0.5  # dim-0 slices = rows
    assert structure_sparsity(LINEAR, "channels") == pytest.approx(1 / 3)


def test_conv_structures() -> None:
    w = conv_weight()
    assert structure_sparsity(w, "filters") == pytest.approx(1 / 3)  # filter 0
    assert structure_sparsity(w, "channels") == 0.5  # channel 1 is zero in every filter
    assert structure_sparsity(w, "kernels2d") == pytest.approx(4 / 6)  # only (1,0) and (2,0) live
    assert sparsity(w) == pytest.approx(19 / 24)


def test_structure_kind_that_does_not_apply_raises() -> None:
    with pytest.raises(ValueError, match="rows apply to 2-D"):
        structure_sparsity(conv_weight(), "rows")
    with pytest.raises(ValueError, match="kernels"):
        structure_sparsity(LINEAR, "kernels2d")
    with pytest.raises(ValueError, match="filters need"):
        structure_sparsity(torch.zeros(4), "filters")
    with pytest.raises(ValueError, match="unknown structure kind"):
        structure_sparsity(LINEAR, "blocks")


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 2)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3, 2)


def make_net() -> Net:
    net = Net()
    with torch.no_grad():
        net.conv.weight.copy_(conv_weight())
        net.fc.weight.copy_(LINEAR)
        net.fc.bias.zero_()
    return net


def test_prunable_parameters_are_conv_and_linear_weights() -> None:
    assert [n for n, _ in prunable_parameters(make_net())] == ["conv.weight", "fc.weight"]


def test_model_sparsity() -> None:
    net = make_net()
    # (19 + 4) zeros of (24 + 6) weights; the all-zero fc.bias does not count by default.
    assert model_sparsity(net) == pytest.approx(23 / 30)
    assert model_sparsity(net, ["fc.bias"]) == 1.0
    assert model_sparsity(net, ["fc.weight", "fc.bias"]) == pytest.approx(6 / 8)
    with pytest.raises(KeyError, match="nope"):
        model_sparsity(net, ["nope"])


def test_sparsity_summary_rows_and_total() -> None:
    rows = sparsity_summary(make_net())
    assert [r.name for r in rows] == ["conv.weight", "fc.weight", "Total"]
    conv, fc, total = rows
    assert conv.shape == (3, 2, 2, 2)
    assert (conv.nnz_dense, conv.nnz_sparse) == (24, 5)
    assert (conv.cols, conv.rows) == (0.0, 0.0)  # not a 2-D weight
    assert conv.ch == pytest.approx(50.0)
    assert conv.k2d == pytest.approx(100 * 4 / 6)
    assert conv.k3d == pytest.approx(100 / 3)
    assert conv.fine == pytest.approx(100 * 19 / 24)
    assert conv.mean == pytest.approx(9 / 24)
    assert conv.abs_mean == pytest.approx(9 / 24)

    assert (fc.nnz_dense, fc.nnz_sparse) == (6, 2)
    # Distiller's labels (weights_sparsity_summary, transposed): Cols (%) counts zero rows W[i, :] (1 of 2),
    # Rows (%) zero columns W[:, j] (1 of 3)
    assert fc.cols == pytest.approx(50.0)
    assert fc.rows == pytest.approx(100 / 3)
    assert (fc.ch, fc.k2d, fc.k3d) == (0.0, 0.0, 0.0)
    assert fc.fine == pytest.approx(100 * 4 / 6)
    # values 0,0,0,1,0,2: mean 0.5; squared deviations sum to 3.5; unbiased variance 3.5 / 5
    assert fc.mean == pytest.approx(0.5)
    assert fc.abs_mean == pytest.approx(0.5)
    assert fc.std == pytest.approx(math.sqrt(0.7))

    assert (total.nnz_dense, total.nnz_sparse) == (30, 7)
    assert total.fine == pytest.approx(100 * 23 / 30)


def test_format_summary_is_a_table() -> None:
    text = format_summary(sparsity_summary(make_net()))
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["Name", "Shape"]
    assert "Fine (%)" in lines[0]
    assert lines[2].startswith("conv.weight") and "3 x 2 x 2 x 2" in lines[2]
    assert lines[-1].startswith("Total") and "76.67" in lines[-1]
    assert len({len(line) for line in lines}) == 1  # fixed width
