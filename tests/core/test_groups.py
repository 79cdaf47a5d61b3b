"""One vocabulary of structure groups (pruning_core.groups), the same structures in every consumer.

Hand computations on a 3x4 matrix whose row 0 and columns 1 and 3 are zero: the metrics, the Group
Lasso penalty and thresholding, the pruners and the summary must all agree on what a row and a column
are, and on Distiller's names for them (measured against Distiller's code: its thresholding and Group
Lasso "Rows" are dim-0 slices; its ranked pruner's "Rows" and its summary label the transposed way).
"""

from __future__ import annotations

import math
import typing

import pytest
import torch
from torch import nn

from api.schemas import SensitivitySpec
from pruning_core import declarations, groups, regularizers, sensitivity
from pruning_core.metrics import sparsity_summary, structure_sparsity, structure_view
from pruning_core.pruners import ranked_structure_mask, structure_mask
from pruning_core.regularizers import group_lasso, group_threshold_mask

W = torch.tensor([[0.0, 0.0, 0.0, 0.0],
                  [1.0, 0.0, 2.0, 0.0],
                  [3.0, 0.0, 4.0, 0.0]])
EPS = 1e-8


def test_rows_are_dim_0_and_cols_dim_1_in_the_metrics() -> None:
    assert structure_sparsity(W, "rows") == pytest.approx(1 / 3)  # row 0
    assert structure_sparsity(W, "cols") == pytest.approx(2 / 4)  # columns 1 and 3
    assert structure_sparsity(W, "filters") == structure_sparsity(W, "rows")  # dim-0 slices both
    assert structure_sparsity(W, "channels") == structure_sparsity(W, "cols")
    conv = torch.zeros(5, 3, 2, 2)
    counts = {name: structure_view(conv, name).shape[0] for name in ("filters", "channels", "kernels", "tensor")}
    assert counts == {"filters": 5, "channels": 3, "kernels": 15, "tensor": 1}


def test_group_lasso_and_thresholding_use_distillers_rows_and_cols() -> None:
    rows = math.sqrt(0 + EPS) + math.sqrt(1 + 4 + EPS) + math.sqrt(9 + 16 + EPS)
    cols = math.sqrt(1 + 9 + EPS) + math.sqrt(4 + 16 + EPS) + 2 * math.sqrt(EPS)
    assert float(group_lasso(W, "Rows", 1.0)) == pytest.approx(rows)
    assert float(group_lasso(W, "Cols", 1.0)) == pytest.approx(cols)
    assert float(group_lasso(W, "Rows+Cols", 1.0)) == pytest.approx(rows + cols)
    keep_rows = group_threshold_mask(W, "Rows", 0.0, "Max")
    assert keep_rows.tolist() == [[False] * 4, [True] * 4, [True] * 4]
    keep_cols = group_threshold_mask(W, "Cols", 0.0, "Max")
    assert keep_cols.tolist() == [[True, False, True, False]] * 3


def test_pruners_rank_rows_and_cols_and_distillers_ranked_rows_are_columns() -> None:
    dense = torch.tensor([[1.0, 9.0, 1.0, 9.0],
                          [5.0, 5.0, 5.0, 5.0],
                          [0.5, 0.5, 0.5, 0.5]])
    # int(0.5 * 3) = 1 row of smallest L1 (row 2: 2.0); int(0.5 * 4) = 2 columns (0 and 2: 6.5 each)
    assert structure_mask(dense, 0.5, "rows").tolist() == [[True] * 4, [True] * 4, [False] * 4]
    assert structure_mask(dense, 0.5, "cols").tolist() == [[False, True, False, True]] * 3
    # Distiller's rank_and_prune_rows ranks rank_cols and expands them as 'Cols': input features of W
    assert torch.equal(ranked_structure_mask(dense, 0.5, "Rows"), structure_mask(dense, 0.5, "cols"))
    assert torch.equal(ranked_structure_mask(dense, 0.5, "Filters"), structure_mask(dense, 0.5, "rows"))
    with pytest.raises(ValueError, match=r"group_type Rows ranks a dim-1 slice of a matrix.* 2-D weights"):
        ranked_structure_mask(torch.ones(4, 4, 3, 3), 0.5, "Rows")


def test_the_summary_labels_columns_as_distiller_does() -> None:
    model = nn.Sequential(nn.Linear(4, 3, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(W)
    (fc, _total) = sparsity_summary(model)
    # Distiller: sparsity_cols(W) = sparsity_matrix(W, 0) = zero rows; sparsity_rows(W) = zero columns
    assert fc.cols == pytest.approx(100 / 3) and fc.rows == pytest.approx(50.0)
    assert groups.DISTILLER_SUMMARY["Cols (%)"] == "rows" and groups.DISTILLER_SUMMARY["Rows (%)"] == "cols"


def test_every_layer_reads_the_one_vocabulary() -> None:
    assert declarations.GROUP_TYPES == groups.RANKED_GROUP_TYPES == tuple(groups.DISTILLER_RANKED)
    assert declarations.REGULARIZER_GROUP_TYPES == regularizers.GROUP_TYPES == groups.REGULARIZER_GROUP_TYPES
    assert set(regularizers.GROUP_TYPES) == {*groups.DISTILLER, *groups.DISTILLER_COMBINED} - {"Blocks"}
    assert sensitivity.GROUPS == groups.SENSITIVITY_GROUPS
    assert typing.get_args(SensitivitySpec.model_fields["group"].annotation) == groups.SENSITIVITY_GROUPS
    for table in (groups.DISTILLER, groups.DISTILLER_RANKED, groups.DISTILLER_SUMMARY, groups.SENSITIVITY):
        assert set(table.values()) <= set(groups.GROUPS)
    assert groups.group("Rows", groups.DISTILLER).dim == 0 and groups.group("Rows", groups.DISTILLER_RANKED).dim == 1
    with pytest.raises(ValueError, match="'Diagonals' is not known; use one of"):
        groups.group("Diagonals", groups.DISTILLER)
