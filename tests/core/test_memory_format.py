"""The layout a sweep measures in (``SensitivityAnalysis(memory_format=...)``): channels-last for a convolutional
model that runs in it, the same in every engine and every process; the model given back as it came."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pruning_core.datasets import load_dataset, make_loader
from pruning_core.models import create_model
from pruning_core.sensitivity import SensitivityAnalysis, analyze

torch.set_num_threads(1)
LEVELS = [0.0, 0.5]


class ViewsItsConvolution(nn.Module):
    """A convolution whose output is ``view``-ed: that fails on a channels-last tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).view(x.shape[0], -1))


@pytest.fixture(scope="module")
def loader():  # noqa: ANN201 - a DataLoader
    return make_loader(load_dataset("digits", "test"), batch_size=64)


def _points(result) -> list[tuple]:  # noqa: ANN001 - a SensitivityResult
    return [(p.parameter, p.sparsity, p.top1, p.top5, p.loss) for p in result.points]


def test_a_convolutional_model_runs_channels_last_and_comes_back_contiguous(loader) -> None:  # noqa: ANN001
    model = create_model("digits-cnn").eval()
    run = SensitivityAnalysis(model, loader, levels=LEVELS, device="cpu", samples=128)
    assert run.memory_format == "channels_last"
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    # a point's pruned weights keep the trained tensors' layout (a contiguous one is reordered on every call)
    pruned = run.pruned(run.masks("conv2.weight", 0.5))["conv2.weight"]
    assert pruned.is_contiguous(memory_format=torch.channels_last) and not pruned.is_contiguous()
    points = list(run)
    assert model.conv1.weight.is_contiguous() and model.conv1.weight.requires_grad
    assert run.result(points).info["memory_format"] == "channels_last"
    # the weights stayed trainable (converted outside inference mode): a backward pass runs
    model.train()
    model(torch.zeros(2, 1, 8, 8)).sum().backward()
    assert model.conv1.weight.grad is not None


def test_both_layouts_give_the_same_levels_and_each_engine_pair_agrees_exactly(loader) -> None:  # noqa: ANN001
    model = create_model("digits-cnn").eval()
    runs = {(fmt, engine): analyze(model, loader, levels=LEVELS, device="cpu", samples=128, engine=engine,
                                   memory_format=fmt)
            for fmt in ("channels_last", "contiguous") for engine in ("plain", "fast")}
    for fmt in ("channels_last", "contiguous"):
        assert _points(runs[fmt, "plain"]) == _points(runs[fmt, "fast"])  # to the last bit, in either layout
        assert runs[fmt, "fast"].info["memory_format"] == fmt
    cl, contiguous = runs["channels_last", "fast"].points, runs["contiguous", "fast"].points
    assert [(p.top1, p.top5) for p in cl] == [(p.top1, p.top5) for p in contiguous]
    assert all(p.loss == pytest.approx(q.loss, rel=1e-5) for p, q in zip(cl, contiguous, strict=True))


def test_a_model_that_cannot_run_channels_last_stays_contiguous(loader) -> None:  # noqa: ANN001
    model = ViewsItsConvolution().eval()
    result = analyze(model, loader, levels=LEVELS, device="cpu", samples=64)
    assert result.info["memory_format"] == "contiguous" and len(result.points) == 4
    with pytest.raises(ValueError, match="memory_format='channels_last': the model cannot run in it"):
        SensitivityAnalysis(model, loader, levels=LEVELS, device="cpu", samples=64, memory_format="channels_last")
    with pytest.raises(ValueError, match="memory_format 'nhwc': choose one of auto, channels_last, contiguous"):
        SensitivityAnalysis(model, loader, levels=LEVELS, device="cpu", memory_format="nhwc")


def test_a_model_without_convolutions_is_left_as_it_is(loader) -> None:  # noqa: ANN001
    model = create_model("lenet-300-100", input_shape=(1, 8, 8)).eval()
    run = SensitivityAnalysis(model, loader, levels=LEVELS, device="cpu", samples=64)
    assert run.memory_format == "contiguous"
