"""Thinning removes dead filters/channels and the thinned model computes what the masked one did."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pruning_core.masks import MaskSet
from pruning_core.models import create_model
from pruning_core.pruners import L1RankedStructureParameterPruner
from pruning_core.thinning import example_input, mask_dependents, rebuild_thinned, thin, thinned_copy


def _random_bn(model: nn.Module) -> None:
    """Trained-looking BatchNorm statistics, so a BN bias left alive would show in the outputs."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))


def _filter_prune(name: str, weights: list[str], level: float, shape: tuple[int, ...]) -> tuple:
    model = create_model(name)
    _random_bn(model)
    model.eval()
    masks = MaskSet(model)
    L1RankedStructureParameterPruner("Filters", level, weights).prune(model, masks)
    x = example_input(shape, batch=4)
    mask_dependents(model, masks, x)
    return model, masks, x


def test_resnet20_filters_thinned_outputs_match_masked() -> None:
    model, _, x = _filter_prune("resnet20-cifar", ["layer*.*.conv1.weight"], 0.5, (3, 32, 32))
    with torch.no_grad():
        masked = model(x)
    thinned, report = thinned_copy(model, x, latency=False)
    with torch.no_grad():
        assert torch.allclose(thinned(x), masked, atol=1e-5)
    assert report.max_abs_diff < 1e-5
    assert report.removed["layer1.0.conv1"] == 8 and report.removed["layer3.2.conv1"] == 32
    assert thinned.layer1[0].conv1.out_channels == 8
    assert thinned.layer1[0].conv2.in_channels == 8
    assert report.after.macs < 0.6 * report.before.macs
    assert report.after.params < report.before.params
    # the history rebuilds the thinned shapes on a fresh model, so the state dict loads
    fresh = rebuild_thinned(create_model("resnet20-cifar"), report.history, x)
    fresh.load_state_dict(thinned.state_dict())
    fresh.eval()
    with torch.no_grad():
        assert torch.allclose(fresh(x), masked, atol=1e-5)


def test_without_dependents_bn_keeps_channel_alive_and_nothing_is_removed() -> None:
    model = create_model("digits-cnn")
    _random_bn(model)
    model.eval()
    L1RankedStructureParameterPruner("Filters", 0.5, ["conv2.weight"]).prune(model, MaskSet(model))
    report = thin(model, example_input((1, 8, 8)), latency=False)
    assert report.removed == {}  # the BN bias makes those channels constant, not zero: removing them would lie


def test_digits_cnn_channels_unread_by_consumer_are_removed() -> None:
    model = create_model("digits-cnn")
    _random_bn(model)
    model.eval()
    masks = MaskSet(model)
    L1RankedStructureParameterPruner("Channels", 0.25, ["conv3.weight"]).prune(model, masks)
    x = example_input((1, 8, 8), batch=3)
    with torch.no_grad():
        masked = model(x)
    report = thin(model, x, latency=False)
    assert report.removed == {"conv2": 16}
    assert model.conv3.in_channels == 48 and model.bn2.num_features == 48
    with torch.no_grad():
        assert torch.allclose(model(x), masked, atol=1e-5)


def test_output_layer_keeps_its_classes_and_latency_is_measured() -> None:
    model, _, x = _filter_prune("digits-cnn", ["conv1.weight", "conv2.weight", "fc.weight"], 0.5, (1, 8, 8))
    report = thin(model, x, repeats=3)
    assert "fc" not in report.removed and model.fc.out_features == 10
    assert report.removed == {"conv1": 16, "conv2": 32}
    assert report.before.latency_ms > 0 and report.after.latency_ms > 0
    assert report.to_dict()["macs_ratio"] == pytest.approx(report.after.macs / report.before.macs)


def test_compare_latency_times_models_side_by_side() -> None:
    from pruning_core.thinning import compare_latency

    big = nn.Sequential(*[nn.Linear(512, 512) for _ in range(4)])
    small = nn.Sequential(nn.Linear(512, 8))
    big.train()
    times = compare_latency({"big": big, "small": small}, torch.randn(64, 512), repeats=5, warmup=1)
    assert set(times) == {"big", "small"} and all(t > 0 for t in times.values())
    assert times["small"] < times["big"]
    assert big.training  # modes restored
