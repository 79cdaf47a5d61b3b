"""CompressionScheduler: pruning at the scheduled epochs, masks kept through training, lr policies."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pruning_core.metrics import model_sparsity
from pruning_core.schedule import ScheduleError, parse_schedule
from pruning_core.scheduler import CompressionScheduler
from pruning_core.training import train

SCHEDULE = """\
version: 1
pruners:
  agp:
    class: AutomatedGradualPruner
    initial_sparsity: 0.1
    final_sparsity: 0.7
    weights: ['*']
lr_schedulers:
  lr:
    class: StepLR
    step_size: 1
    gamma: 0.5
policies:
  - pruner: {instance_name: agp}
    starting_epoch: 0
    ending_epoch: 4
    frequency: 1
  - lr_scheduler: {instance_name: lr}
    starting_epoch: 2
    ending_epoch: 4
"""


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


def _data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(16, 8, generator=g), torch.randint(0, 3, (16,), generator=g)) for _ in range(4)]


@pytest.mark.filterwarnings(r"ignore:Detected call of `lr_scheduler.step\(\)`")
def test_prunes_at_scheduled_epochs_and_steps_lr() -> None:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    cs = CompressionScheduler(model, parse_schedule(SCHEDULE), optimizer=opt)
    seen = []
    for epoch in range(5):
        pruned = cs.on_epoch_begin(epoch)
        seen.append((bool(pruned), round(model_sparsity(model), 4), opt.param_groups[0]["lr"]))
        cs.on_epoch_end(epoch)
    # span 3: targets 0.1, 0.1 + 0.6 * (1 - 8/27), 0.7 - 0.6/27, 0.7; the lr halves after epochs 2 and 3
    assert [s[0] for s in seen] == [True, True, True, True, False]
    assert seen[3][1] == pytest.approx(0.7, abs=0.01) and seen[4][1] == seen[3][1]
    assert [s[2] for s in seen] == [1.0, 1.0, 1.0, 0.5, 0.25]
    assert cs.target_sparsities(1)["agp"] == pytest.approx(0.7 - 0.6 * 8 / 27)


def test_masks_hold_through_training_and_pruned_weights_get_no_gradient() -> None:
    model = _model()
    cs = CompressionScheduler(model, parse_schedule(SCHEDULE))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    cs.attach(opt)
    history = train(model, _data(), epochs=5, optimizer=opt, scheduler=cs, masks=cs.masks,
                    on_epoch_start=lambda e: cs.on_epoch_begin(e - 1), progress=False)
    assert len(history) == 5
    for name in cs.masks.names():
        weight = model.get_parameter(name)
        assert torch.all(weight[~cs.masks.get(name)] == 0)
    assert model_sparsity(model) == pytest.approx(0.7, abs=0.01)
    assert history[-1].lr == pytest.approx(0.1 * 0.25)


def test_unknown_weight_fails_before_training_with_line() -> None:
    text = SCHEDULE.replace("weights: ['*']", "weights: ['0.weight', '5.weight']")
    with pytest.raises(ScheduleError) as err:
        CompressionScheduler(_model(), parse_schedule(text, source="s.yaml"))
    assert err.value.line == 7 and "5.weight" in str(err.value)


def test_one_shot_level_pruner_and_lr_without_optimizer_is_an_error() -> None:
    text = """\
pruners:
  once: {class: SparsityLevelParameterPruner, levels: {'0.weight': 0.5}}
lr_schedulers:
  lr: {class: ExponentialLR, gamma: 0.9}
policies:
  - pruner: {instance_name: once}
    epochs: [0]
  - lr_scheduler: {instance_name: lr}
    starting_epoch: 0
    ending_epoch: 3
"""
    model = _model()
    cs = CompressionScheduler(model, parse_schedule(text))
    assert cs.on_epoch_begin(0) == {"0.weight": 0.5}
    with pytest.raises(RuntimeError, match="optimizer"):
        cs.on_epoch_end(0)
