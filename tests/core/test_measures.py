"""One counter and one clock (pruning_core.measures): a point's footprint is what thinning its mask leaves,
and latency is timed on a clock that waits for the device."""

from __future__ import annotations

import copy
import time

import pytest
import torch
from torch import nn

from pruning_core.coupled import CoupledGroups
from pruning_core.datasets import load_dataset, make_loader
from pruning_core.masks import MaskSet
from pruning_core.measures import compare_latency, model_counts, time_forward
from pruning_core.models import create_model
from pruning_core.points import metric_names
from pruning_core.pruners import structure_mask
from pruning_core.sensitivity import analyze
from pruning_core.thinning import example_input, mask_dependents, measure_latency, thin

torch.set_num_threads(1)

SHAPE = (3, 32, 32)
CASES = {  # a filter whose removal thinning allows, one feeding a residual add, and (mobilenet) the last conv
    "resnet20-cifar": ["layer1.0.conv1.weight", "layer1.0.conv2.weight", "layer3.1.conv1.weight"],
    "mobilenet_v2": ["features.2.conv.0.0.weight", "features.4.conv.2.weight", "features.18.0.weight"],
}


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return create_model(name, **({"num_classes": 10} if name == "mobilenet_v2" else {})).eval()


def _point_masks(model: nn.Module, name: str, level: float, coupled: bool, x: torch.Tensor,
                 kind: str = "filters") -> dict:
    """The keep-masks of a structured point, built as the analysis documents them: the filters (channels) of
    smallest L1 norm of ``name``, and with ``coupled`` their whole Torch-Pruning dependency group."""
    weight = dict(model.named_parameters())[name].detach()
    mask = structure_mask(weight, level, kind)
    if not coupled:
        return {name: mask}
    along = mask if kind == "filters" else mask.transpose(0, 1)
    idxs = torch.nonzero(~along.flatten(1).any(1)).flatten().tolist()
    module = model.get_submodule(name.rpartition(".")[0])
    masks = CoupledGroups(model, x[:1]).masks(module, kind == "filters", idxs)
    masks[name] = masks.get(name, torch.ones_like(mask)) & mask
    return masks


def _thinned_counts(model: nn.Module, masks: dict, x: torch.Tensor) -> tuple[int, int, dict]:
    """The prune job's path: mask a copy, extend the masks to bias and BatchNorm, thin, read the report."""
    clone = copy.deepcopy(model)
    mask_set = MaskSet(clone)
    for name, keep in masks.items():
        mask_set.set(name, keep)
    mask_dependents(clone, mask_set, x)
    mask_set.apply()
    report = thin(clone, x, latency=False)
    return report.after.macs, report.after.params, report.removed


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(CASES))
def test_point_footprint_equals_the_thinning_report_in_both_modes(arch: str) -> None:
    model = _model(arch)
    loader = make_loader(load_dataset("synthetic", "test", n=4, shape=SHAPE, classes=10), batch_size=4)
    x = example_input(SHAPE, batch=2)
    dense = model_counts(model, x)
    assert dense[1] == sum(p.numel() for p in model.parameters())
    for coupled in (False, True):
        result = analyze(model, loader, levels="0.5", params=CASES[arch], group="filter", coupled=coupled,
                         device="cpu")
        assert len(result.points) == len(CASES[arch])
        smaller = 0
        for point in result.points:
            macs, params, _ = _thinned_counts(model, _point_masks(model, point.parameter, point.sparsity,
                                                                  coupled, x), x)
            assert (point.macs, point.params_left) == (macs, params), (coupled, point.parameter, point.sparsity)
            smaller += point.macs < dense[0]
            assert point.thinnable is True or point.macs == dense[0]
        assert smaller >= 1  # some masks do thin: the equality is not dense == dense
        if coupled:  # a whole dependency group always thins
            assert all(p.thinnable for p in result.points)


def test_channel_point_footprint_equals_the_thinning_report_in_both_modes() -> None:
    """Channels a layer alone reads are removed with the filters producing them (thinning's other rule)."""
    model = _model("resnet20-cifar")
    loader = make_loader(load_dataset("synthetic", "test", n=4, shape=SHAPE, classes=10), batch_size=4)
    x = example_input(SHAPE, batch=2)
    for coupled in (False, True):
        points = analyze(model, loader, levels="0.5", params=["layer1.0.conv2.weight", "layer2.0.conv1.weight"],
                         group="channel", coupled=coupled, device="cpu").points
        for point in points:
            masks = _point_masks(model, point.parameter, point.sparsity, coupled, x, kind="channels")
            macs, params, removed = _thinned_counts(model, masks, x)
            assert (point.macs, point.params_left) == (macs, params), (coupled, point.parameter)
            assert point.thinnable is bool(removed)
        # layer1.0.conv2's inputs come from conv1 alone; layer2.0.conv1's from the residual stream, read by others
        assert [p.thinnable for p in points] == [True, coupled]


def test_residual_add_filter_mask_removes_nothing_and_says_so() -> None:
    model = _model("resnet20-cifar")
    loader = make_loader(load_dataset("synthetic", "test", n=4, shape=SHAPE, classes=10), batch_size=4)
    x = example_input(SHAPE, batch=2)
    dense_macs, dense_params = model_counts(model, x)
    points = analyze(model, loader, levels="0,0.5", params=["layer1.0.conv1.weight", "layer1.0.conv2.weight"],
                     group="filter", device="cpu").points
    free0, free, tied0, tied = points
    # layer1.0.conv2's filters feed the residual add: thinning keeps them, so the point keeps them too
    assert _thinned_counts(model, {tied.parameter: structure_mask(model.layer1[0].conv2.weight, 0.5, "filters")},
                           x)[2] == {}
    assert tied.nnz < tied0.nnz  # half its filters were zeroed for the evaluation
    assert (tied.macs, tied.params_left) == (dense_macs, dense_params) == (tied0.macs, tied0.params_left)
    assert tied.thinnable is False and tied.metrics["thinnable"] == 0.0
    # layer1.0.conv1 feeds only conv2: its 8 pruned filters go, with its BatchNorm and conv2's inputs
    assert free.thinnable is True and free0.thinnable is True
    conv1, conv2 = model.layer1[0].conv1, model.layer1[0].conv2
    per_filter = conv1.weight[0].numel() + conv2.weight[:, 0].numel()
    assert dense_params - free.params_left == 8 * (per_filter + 2)  # + the BatchNorm's weight and bias
    assert free.macs < dense_macs
    assert "thinnable" not in metric_names(points)  # a flag, not a metric to plan on


class SlowKernel:
    """A fake device kernel: calling it only queues work and returns at once, as a CUDA launch does; the work
    (``seconds`` of sleep per call) is done when the device is synchronised."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.queued, self.synced = seconds, 0, 0

    def __call__(self, _x: torch.Tensor) -> None:
        self.queued += 1

    def synchronize(self, _device: object = None) -> None:
        time.sleep(self.queued * self.seconds)
        self.queued, self.synced = 0, self.synced + 1


def test_latency_on_cuda_waits_for_the_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = SlowKernel(0.01)
    monkeypatch.setattr(torch.cuda, "synchronize", kernel.synchronize)
    x = torch.zeros(1)
    # an unsynchronised clock would time the launch (microseconds), not the 10 ms of work
    assert time_forward(kernel, x, repeats=3, device="cuda") >= 9.0
    assert kernel.synced > 0
    times = compare_latency({"slow": kernel}, x, repeats=2, warmup=1, device="cuda")
    assert times["slow"] >= 9.0
    # on the CPU there is nothing to wait for: the same call times the launch alone
    synced = kernel.synced
    assert time_forward(kernel, x, repeats=3, device="cpu") < 9.0 and kernel.synced == synced


def test_measure_latency_times_real_work_and_restores_the_mode() -> None:
    big = nn.Sequential(*[nn.Linear(256, 256) for _ in range(4)]).train()
    small = nn.Linear(256, 4)
    x = torch.randn(32, 256)
    assert measure_latency(small, x, repeats=5) < measure_latency(big, x, repeats=5)
    assert big.training
