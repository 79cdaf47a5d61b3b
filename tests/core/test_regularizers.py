"""Regularizers: Distiller's Group Lasso and L1 penalties, thresholding, and their scheduling."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pruning_core.models import create_model
from pruning_core.prune_job import run_prune
from pruning_core.regularizers import (
    GroupLassoRegularizer,
    L1Regularizer,
    group_lasso,
    group_threshold_mask,
)
from pruning_core.schedule import parse_schedule
from pruning_core.scheduler import CompressionScheduler


def test_group_lasso_filters_and_channels_match_hand_computed() -> None:
    w = torch.arange(2 * 3 * 1 * 2, dtype=torch.float32).view(2, 3, 1, 2)
    filters = sum(math.sqrt(float((w[f] ** 2).sum()) + 1e-8) for f in range(2))
    channels = sum(math.sqrt(float((w[:, c] ** 2).sum()) + 1e-8) for c in range(3))
    assert float(group_lasso(w, "Filters", 0.5)) == pytest.approx(0.5 * filters)
    assert float(group_lasso(w, "3D", 0.5)) == pytest.approx(0.5 * filters)
    assert float(group_lasso(w, "Channels", 0.5)) == pytest.approx(0.5 * channels)
    assert float(group_lasso(w, "4D", 2.0)) == pytest.approx(2.0 * float(w.norm()))
    m = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    assert float(group_lasso(m, "Rows", 1.0)) == pytest.approx(5.0 + 1e-4, abs=1e-6)
    with pytest.raises(ValueError, match="2-D"):
        group_lasso(w, "Rows", 1.0)


def test_group_threshold_mask_drops_groups_at_or_below_the_strength() -> None:
    w = torch.ones(4, 2, 3, 3)
    w[1] *= 0.001
    w[3, 0] = 0.0  # mean |w| of filter 3 is 0.5
    keep = group_threshold_mask(w, "Filters", 0.001, "Mean_Abs")
    assert keep[1].logical_not().all() and keep[0].all() and keep[3].all()
    assert group_threshold_mask(w, "Filters", 0.6, "Mean_Abs")[3].logical_not().all()
    assert group_threshold_mask(w, "Filters", 0.6, "Max")[3].all()  # its max is 1


def test_l1_regularizer_on_batchnorm_penalty_and_gradient() -> None:
    bn = nn.Sequential(nn.BatchNorm2d(4))
    reg = L1Regularizer({"0.weight": 0.01})
    loss = reg.loss(bn)
    assert float(loss.detach()) == pytest.approx(0.04)
    loss.backward()
    assert torch.allclose(bn[0].weight.grad, torch.full((4,), 0.01))
    assert reg.threshold(bn) == {}  # no threshold_criteria: never zeroes
    with pytest.raises(ValueError, match="not parameters"):
        L1Regularizer({"1.weight": 0.1}).loss(bn)
    assert GroupLassoRegularizer({"0.weight": [0.1, "Filters"]}, "Max").threshold_criteria == "Max"


SSL = """\
lr_schedulers:
  training_lr: {class: MultiStepMultiGammaLR, milestones: [2], gammas: [0.5]}
regularizers:
  Filters_groups_regularizer:
    class: GroupLassoRegularizer
    reg_regims:
      module.layer1.0.conv1.weight: [{s}, Filters]
      module.layer1.1.conv1.weight: [{s}, Filters]
      module.layer1.2.conv1.weight: [{s}, Filters]
      module.layer2.0.conv1.weight: [{s}, Filters]
      module.layer2.1.conv1.weight: [{s}, Filters]
      module.layer2.2.conv1.weight: [{s}, Filters]
      module.layer3.0.conv1.weight: [{s}, Filters]
      module.layer3.1.conv1.weight: [{s}, Filters]
      module.layer3.2.conv1.weight: [{s}, Filters]
    threshold_criteria: Mean_Abs
extensions:
  net_thinner: {class: FilterRemover, thinning_func_str: remove_filters, arch: resnet20_cifar, dataset: cifar10}
policies:
  - lr_scheduler: {instance_name: training_lr}
    starting_epoch: 0
    ending_epoch: 4
  - extension: {instance_name: net_thinner}
    epochs: [3]
  - regularizer:
      instance_name: Filters_groups_regularizer
      args: {keep_mask: true}
    starting_epoch: 0
    ending_epoch: 3
"""


def _zero_filters(model: nn.Module) -> int:
    return sum(int((m.weight.detach().flatten(1) == 0).all(dim=1).sum()) for n, m in model.named_modules()
               if n.endswith("conv1") and "." in n)


@pytest.mark.slow
def test_group_lasso_drives_resnet20_filters_to_zero_and_thinning_removes_them() -> None:
    """The SSL schedule's shape (Group Lasso on every conv1, keep_mask, FilterRemover after it) with a
    strength large enough to act within 3 epochs of 48 synthetic samples."""
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(48, 3, 32, 32, generator=g), torch.randint(0, 10, (48,), generator=g))
    train, test = DataLoader(data, batch_size=16, shuffle=True, generator=g), DataLoader(data, batch_size=48)
    model = create_model("resnet20_cifar")
    channels_before = sum(m.weight.shape[0] for n, m in model.named_modules() if n.endswith("conv1") and "." in n)
    result = run_prune(model, train, test, parse_schedule(SSL.replace("{s}", "0.05")), 4, lr=0.1,
                       weight_decay=0.0, arch="resnet20_cifar", dataset="synthetic", progress=False)
    reg = [e.regularization_loss for e in result.epochs]
    assert all(r is not None and r > 0 for r in reg[:3]) and reg[3] is None  # active at epochs 0..2
    removed = result.schedule_thinning[3].removed
    zeroed = sum(v for k, v in removed.items() if k.endswith("conv1"))
    assert zeroed > 0
    channels_after = sum(m.weight.shape[0] for n, m in model.named_modules() if n.endswith("conv1") and "." in n)
    assert channels_before - channels_after == zeroed
    assert [e.lr for e in result.epochs] == pytest.approx([0.1, 0.1, 0.05, 0.05])  # MultiStepMultiGammaLR
    print(f"group lasso zeroed and thinning removed {zeroed} of {channels_before} conv1 filters")


def test_regularizer_penalty_only_in_its_epochs() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3))
    text = ("regularizers:\n  r: {class: L1Regularizer, reg_regims: {0.weight: 0.1}}\n"
            "policies:\n  - regularizer: {instance_name: r}\n    epochs: [1]\n")
    cs = CompressionScheduler(model, parse_schedule(text))
    loss = torch.tensor(1.0)
    cs.on_epoch_begin(0)
    assert cs.before_backward_pass(loss) is loss
    cs.on_epoch_begin(1)
    assert float(cs.before_backward_pass(loss)) == pytest.approx(1.0 + 0.1 * float(model[0].weight.abs().sum()))
    assert cs.regularization_loss[1] > 0
