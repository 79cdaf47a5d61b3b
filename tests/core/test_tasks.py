"""Your own metric and batches (issue 14): ``analyze(metric=...)``, dict batches, several inputs, a forward hook.

Every engine comparison runs both engines in 4-sample chunks, smaller than every batch here, so the chunking
(and the joining of a batch's chunks before it is scored) is exercised too.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from pruning_core import pruners
from pruning_core.points import metric_value
from pruning_core.sensitivity import analyze
from pruning_core.tasks import Evaluation

torch.set_num_threads(1)
LEVELS = "0,0.5,0.9"


class Regressor(nn.Module):
    """A regression head: 6 features -> one value."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 16)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.fc1(x))).squeeze(1)


def regression_data(n: int = 40) -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 6, generator=g)
    return TensorDataset(x, x[:, :3].sum(1) + 0.1 * torch.randn(n, generator=g))


def trained_regressor(data: TensorDataset) -> Regressor:
    """A regressor fitted to the data (200 full-batch Adam steps: milliseconds), so pruning it costs accuracy."""
    torch.manual_seed(0)
    model = Regressor()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    x, y = data.tensors
    for _ in range(200):
        opt.zero_grad()
        F.mse_loss(model(x), y).backward()
        opt.step()
    return model.eval()


def mae(outputs: torch.Tensor, batch: tuple) -> torch.Tensor:
    return (outputs - batch[1]).abs()


def both(model: nn.Module, loader: DataLoader, **kw):
    plain = analyze(model, loader, engine="plain", device="cpu", levels=LEVELS, cpu_chunk=4, **kw)
    fast = analyze(model, loader, engine="fast", device="cpu", levels=LEVELS, cpu_chunk=4, **kw)
    assert (plain.engine, fast.engine) == ("plain", "fast"), fast.engine_note
    return plain, fast


def assert_same(a: list, b: list) -> None:
    """The same points: every field equal (the metrics to the last bit, as the batches scored are the same)."""
    assert [p.to_dict() for p in a] == [q.to_dict() for q in b]


def test_custom_metric_is_the_mean_absolute_error_of_a_regression_head() -> None:
    data = regression_data()
    model, loader = trained_regressor(data), DataLoader(data, batch_size=16)
    result = analyze(model, loader, metric=mae, metric_name="mae", levels=LEVELS, device="cpu",
                     params=["fc1.weight"])
    x, y = data.tensors
    trained = model.fc1.weight.detach().clone()
    for point in result.points:
        with torch.no_grad():  # the direct computation: prune, evaluate every sample at once, restore
            model.fc1.weight.copy_(trained * pruners.level_mask(trained, point.sparsity))
            expected = (model(x) - y).abs().mean().item()
            model.fc1.weight.copy_(trained)
        assert point.metrics == {"mae": pytest.approx(expected, rel=1e-6)}
        assert metric_value(point, "mae") == point.metrics["mae"]
        assert (point.top1, point.top5, point.loss, point.top1_low, point.samples) == (None, None, None, None, 40)
    with torch.no_grad():
        assert result.baseline["metrics"]["mae"] == pytest.approx((model(x) - y).abs().mean().item(), rel=1e-6)
    assert result.baseline["top1"] is None and result.info["metric"] == "mae" and result.info["task"] is None
    maes = [p.metrics["mae"] for p in result.points]
    assert maes[0] < 0.5 < maes[-1]  # fitted; pruning 90% of its first layer hurts


def test_dict_of_sums_is_divided_by_the_samples_or_by_its_own_count() -> None:
    model, loader = Regressor().eval(), DataLoader(regression_data(), batch_size=16)

    def sums(outputs: torch.Tensor, batch: tuple) -> dict:
        err = outputs - batch[1]
        return {"sse": (err**2).sum(), "sae": err.abs().sum()}

    def weighted(outputs: torch.Tensor, batch: tuple) -> dict:  # a mean over 2 values per sample
        return {"mse2": 2 * ((outputs - batch[1]) ** 2).sum(), "n": 2 * len(outputs)}

    per_sample = analyze(model, loader, metric=mae, metric_name="mae", levels=LEVELS, device="cpu")
    summed = analyze(model, loader, metric=sums, levels=LEVELS, device="cpu")
    counted = analyze(model, loader, metric=weighted, levels=LEVELS, device="cpu")
    for p, q, r in zip(per_sample.points, summed.points, counted.points, strict=True):
        assert set(q.metrics) == {"sse", "sae"} and set(r.metrics) == {"mse2"}
        assert q.metrics["sae"] == pytest.approx(p.metrics["mae"], rel=1e-6)
        assert r.metrics["mse2"] == pytest.approx(q.metrics["sse"], rel=1e-6)
        assert q.samples == r.samples == 40


def test_fast_equals_plain_with_a_custom_metric() -> None:
    torch.manual_seed(0)
    plain, fast = both(Regressor(), DataLoader(regression_data(), batch_size=16), metric=mae, metric_name="mae")
    assert len(fast.points) == 2 * 3 and all(p.metrics for p in fast.points)
    assert_same(plain.points, fast.points)
    assert plain.baseline == fast.baseline


def test_a_task_and_a_metric_together() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))
    x = torch.randn(32, 6, generator=torch.Generator().manual_seed(2))
    loader = DataLoader(TensorDataset(x, x[:, :3].argmax(1)), batch_size=8)

    def confidence(outputs: torch.Tensor, batch: tuple) -> torch.Tensor:
        return outputs.softmax(1).max(1).values

    plain, fast = both(model, loader, task="classification", metric=confidence, metric_name="confidence")
    assert_same(plain.points, fast.points)
    for p in fast.points:
        assert p.top1 is not None and p.top1_low is not None and p.loss is not None and 0 < p.metrics["confidence"] <= 1


class TwoInputs(nn.Module):
    """A model of two inputs (an image and side features), like Torch-Pruning #447's."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.side = nn.Linear(3, 4)
        self.head = nn.Linear(4 * 6 * 6 + 4, 5)

    def forward(self, image: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.conv(image).relu().flatten(1), self.side(features).relu()], 1))


class DictData(Dataset):
    """HF-style samples: the model's keyword inputs plus ``labels``."""

    def __init__(self, n: int = 24) -> None:
        g = torch.Generator().manual_seed(3)
        self.image, self.features = torch.randn(n, 1, 6, 6, generator=g), torch.randn(n, 3, generator=g)
        self.labels = torch.randint(5, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"features": self.features[i], "image": self.image[i], "labels": self.labels[i]}


def test_dict_batches_feed_a_two_input_model_on_both_engines() -> None:
    torch.manual_seed(0)
    model, loader = TwoInputs(), DataLoader(DictData(), batch_size=8)
    plain, fast = both(model, loader, params=["conv.weight", "side.weight", "head.weight"])
    assert len(fast.points) == 9 and all(p.samples == 24 and p.top1 is not None for p in fast.points)
    assert_same(plain.points, fast.points)
    assert len({p.loss for p in fast.points}) > 3  # the levels change the outputs


class PairData(DictData):
    """The same samples as ``((image, features), label)``: several inputs in a tuple batch."""

    def __getitem__(self, i: int) -> tuple:
        return (self.image[i], self.features[i]), self.labels[i]


def test_several_inputs_from_tuple_batches_inputs_or_a_forward_hook() -> None:
    torch.manual_seed(0)
    model = TwoInputs()
    # batches of 4, as both() chunks them: the hook runs whole batches, and oneDNN's convolution of a sample may
    # differ in its last bits with the samples beside it (fast and plain chunk alike, so they always agree)
    reference = analyze(model, DataLoader(DictData(), batch_size=4), engine="plain", device="cpu", levels=LEVELS)
    plain, fast = both(model, DataLoader(PairData(), batch_size=4))  # ((a, b), y): model(a, b)
    assert_same(reference.points, plain.points)
    assert_same(plain.points, fast.points)
    _, picked = both(model, DataLoader(DictData(), batch_size=4), inputs=lambda b: (b["image"], b["features"]))
    assert_same(reference.points, picked.points)
    hooked = analyze(model, DataLoader(PairData(), batch_size=4), engine="fast", device="cpu", levels=LEVELS,
                     forward=lambda m, b: m(b[0][0], features=b[0][1]))
    assert hooked.engine == "plain" and "forward hook" in hooked.engine_note and "inputs" in hooked.engine_note
    assert_same(reference.points, hooked.points)


class StarInputs(TwoInputs):
    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return super().forward(*inputs)


def test_inputs_the_traced_graph_cannot_name_fall_back_to_plain_saying_why() -> None:
    torch.manual_seed(0)
    model, loader = StarInputs(), DataLoader(PairData(), batch_size=8)
    result = analyze(model, loader, engine="fast", device="cpu", levels="0.5", params=["conv.weight"])
    assert result.engine == "plain" and "*args" in result.engine_note
    assert result.points[0].top1 is not None


def test_what_a_metric_alone_cannot_do_is_refused() -> None:
    loader = DataLoader(regression_data(), batch_size=16)
    with pytest.raises(ValueError, match="early_stop_top1 needs top1.*metric without a task"):
        analyze(Regressor(), loader, metric=mae, levels=LEVELS, early_stop_top1=50.0)
    with pytest.raises(ValueError, match="early_stop_top1 needs top1.*language-model"):
        analyze(Regressor(), loader, task="language-model", levels=LEVELS, early_stop_top1=50.0)
    with pytest.raises(ValueError, match="task 'regression'"):
        analyze(Regressor(), loader, task="regression", levels=LEVELS)
    with pytest.raises(ValueError, match="built-in column"):
        analyze(Regressor(), loader, metric=mae, metric_name="top1", levels=LEVELS)
    with pytest.raises(TypeError, match="per-sample values"):
        analyze(Regressor(), loader, metric=lambda o, b: (o - b[1]).abs().mean(), levels=LEVELS, device="cpu")


def test_language_model_loss_leaves_padding_out_and_perplexity_is_its_exp() -> None:
    g = torch.Generator().manual_seed(4)
    logits, targets = torch.randn(3, 5, 7, generator=g), torch.randint(7, (3, 5), generator=g)
    targets[2, 3:] = -100  # HF padding
    evaluation = Evaluation("language-model")
    evaluation.add(logits[:2], (None, targets[:2]))
    evaluation.add({"logits": logits[2:]}, {"labels": targets[2:]})
    measures = evaluation.result()
    expected = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100).item()
    assert measures.loss == pytest.approx(expected, rel=1e-6)
    assert measures.metrics == {"perplexity": pytest.approx(math.exp(expected), rel=1e-6)}
    assert (measures.samples, measures.top1, measures.hits1) == (3, None, None)
