"""Training and evaluation: digits-cnn reaches 97% in 15 epochs; the same seed gives the same weights."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pruning_core.datasets import load_dataset, make_loader
from pruning_core.models import create_model
from pruning_core.training import EpochMetrics, evaluate, resolve_device, train


@pytest.fixture(autouse=True)
def one_thread():
    """Two busy cores shared by several jobs: one intra-op thread avoids oversubscription stalls."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class _Fixed(nn.Module):
    """Returns preset logits, so evaluate's arithmetic can be checked by hand."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[x.long().view(-1)]


def test_evaluate_top1_top5_loss_by_hand() -> None:
    logits = torch.tensor([[3.0, 2.0, 1.0], [1.0, 3.0, 2.0], [1.0, 2.0, 3.0], [3.0, 1.0, 2.0]])
    targets = torch.tensor([0, 2, 2, 1])
    loader = DataLoader(TensorDataset(torch.arange(4.0), targets), batch_size=3)
    result = evaluate(_Fixed(logits), loader)
    assert result.samples == 4
    assert result.top1 == pytest.approx(50.0)
    assert result.top5 == pytest.approx(100.0)  # top-min(5, 3) = top-3 always hits
    assert result.loss == pytest.approx(float(nn.functional.cross_entropy(logits, targets)))


def test_resolve_device() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def _small_run(seed: int) -> tuple[nn.Module, list[EpochMetrics]]:
    bundle = load_dataset("digits", "train")
    loader = make_loader(bundle, batch_size=128, shuffle=True, subset=256)
    model = create_model("digits-cnn", seed=0)
    history = train(model, loader, epochs=2, seed=seed, optimizer="adam", lr=1e-3, progress=False,
                    scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5))
    return model, history


def test_same_seed_gives_identical_weights() -> None:
    a, history = _small_run(5)
    b, _ = _small_run(5)
    c, _ = _small_run(6)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not torch.equal(a.conv1.weight, c.conv1.weight)
    assert [m.epoch for m in history] == [1, 2]
    assert [m.lr for m in history] == pytest.approx([1e-3, 5e-4])
    assert history[0].top1 is None  # no eval loader


def test_reusing_a_loader_with_the_same_seed_repeats_training() -> None:
    loader = make_loader(load_dataset("digits", "train"), batch_size=64, shuffle=True, subset=128)
    states = []
    for _ in range(2):
        model = create_model("digits-cnn", seed=1)
        train(model, loader, epochs=1, seed=3, progress=False)
        states.append(model.conv2.weight.detach().clone())
    assert torch.equal(*states)


def test_masks_keep_pruned_weights_zero() -> None:
    from pruning_core.masks import MaskSet

    model = create_model("digits-cnn", seed=0)
    masks = MaskSet(model)
    keep = torch.rand(model.conv2.weight.shape, generator=torch.Generator().manual_seed(0)) > 0.5
    masks.set("conv2.weight", keep)
    loader = make_loader(load_dataset("digits", "train"), batch_size=128, shuffle=True, subset=256)
    train(model, loader, epochs=1, masks=masks, progress=False)
    assert bool((model.conv2.weight[~keep] == 0).all())
    assert bool((model.conv2.weight[keep] != 0).any())


@pytest.mark.slow
def test_digits_cnn_reaches_97_percent_in_15_epochs() -> None:
    train_set, test_set = load_dataset("digits", "train"), load_dataset("digits", "test")
    model = create_model("digits-cnn")
    seen: list[EpochMetrics] = []
    start = time.perf_counter()
    history = train(model, make_loader(train_set, shuffle=True), epochs=15,
                    eval_loader=make_loader(test_set), on_epoch=seen.append, progress=False)
    elapsed = time.perf_counter() - start
    assert seen == history and len(history) == 15
    final = evaluate(model, make_loader(test_set))
    print(f"digits-cnn 15 epochs: top1 {final.top1:.2f}% in {elapsed:.1f} s")
    assert final.top1 >= 97.0 and final.samples == 450
    assert final.top1 == pytest.approx(history[-1].top1)
