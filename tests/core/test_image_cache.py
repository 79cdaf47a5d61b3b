"""Image files decoded once per sweep (issue 20): uint8 pixels held within the budget, normalised per batch on
the device, the points identical to torchvision's per-sample ToTensor + Normalize read again every pass."""

from __future__ import annotations

import logging
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from pruning_core.datasets import _IMAGENET_MEAN, _IMAGENET_STD, load_dataset, make_loader
from pruning_core.image_cache import DecodeCounts, Normalise, file_workers
from pruning_core.sensitivity import SensitivityAnalysis, analyze
from pruning_core.training import evaluate

torch.set_num_threads(1)

N, SIZE, BATCH = 24, 12, 8
PIXEL_BYTES = N * 3 * SIZE * SIZE  # the decoded set as uint8; as float32 it is 4x that
LEVELS = "0,0.5,0.9"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few dozen small JPEGs of three classes, of several sizes so that Resize and CenterCrop both work."""
    from PIL import Image

    base = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(N):
        folder = base / "test" / f"c{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.normal(60 + 70 * (i % 3), 40, (16 + i % 5, 14 + 2 * (i % 4), 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i}.jpg", quality=90)
    return base


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Conv2d(6, 8, 3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 8 * 8, 3))


def reference_loader(root: Path):
    """How ``imagefolder`` read images before: torchvision's full transform per sample, in the sweep's process."""
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.Resize(SIZE), transforms.CenterCrop(SIZE), transforms.ToTensor(),
                                    transforms.Normalize(_IMAGENET_MEAN, _IMAGENET_STD)])
    return make_loader(datasets.ImageFolder(str(root / "test"), transform=transform), batch_size=BATCH)


def counted(root: Path, workers: int = 0):
    bundle = load_dataset("imagefolder", "test", root=str(root), size=SIZE)
    return make_loader(bundle, batch_size=BATCH, workers=workers), DecodeCounts(bundle.dataset)


def rows(result) -> list[tuple]:
    return [(p.parameter, p.sparsity, p.top1, p.top5, p.loss, p.samples) for p in result.points]


def budget_mb(batch_bytes: float) -> float:
    """The ``memory_budget_mb`` that gives the held batches ``batch_bytes`` (they get half of it)."""
    return 2 * batch_bytes / 2**20


def test_normalise_is_torchvisions_to_tensor_and_normalize_bit_for_bit() -> None:
    from PIL import Image
    from torchvision import transforms

    values = np.arange(256, dtype=np.uint8).repeat(3).reshape(16, 16, 3)  # every value in every channel
    noise = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    images = [Image.fromarray(values), Image.fromarray(noise)]
    expected = torch.stack([transforms.Normalize(_IMAGENET_MEAN, _IMAGENET_STD)(transforms.ToTensor()(im))
                            for im in images])
    pixels = torch.stack([transforms.PILToTensor()(im) for im in images])
    normalise = Normalise(_IMAGENET_MEAN, _IMAGENET_STD)
    assert torch.equal(normalise(pixels), expected)  # a batch
    assert torch.equal(normalise(pixels[1]), expected[1])  # a sample
    if torch.cuda.is_available():  # on the device, where the sweep normalises
        assert torch.equal(normalise(pixels.cuda()).cpu(), expected)


def test_points_identical_and_each_image_decoded_once(root: Path, model: nn.Module) -> None:
    reference = analyze(model, reference_loader(root), levels=LEVELS, device="cpu",
                        memory_budget_mb=budget_mb(PIXEL_BYTES / 2))  # nothing held: read again every pass
    for engine in ("fast", "plain"):
        loader, decodes = counted(root)
        result = analyze(model, loader, levels=LEVELS, device="cpu", engine=engine)
        assert result.engine == engine and len(result.points) == 3 * 3
        assert rows(result) == rows(reference) and result.baseline == reference.baseline
        assert decodes.per_image() == [1] * N


def test_workers_decode_once_and_give_the_same_points(root: Path, model: nn.Module) -> None:
    if multiprocessing.get_start_method() != "fork":
        pytest.skip("the decode counts reach the test from forked loader processes only")
    loader, decodes = counted(root, workers=2)
    alone, _ = counted(root)
    assert (loader.num_workers, loader.persistent_workers) == (2, True)
    assert rows(analyze(model, loader, levels=LEVELS, device="cpu")) == \
        rows(analyze(model, alone, levels=LEVELS, device="cpu"))
    assert decodes.per_image() == [1] * N


@pytest.mark.parametrize("held", ["floats", "pixels"])
def test_budget_respected(root: Path, model: nn.Module, held: str) -> None:
    """Float batches held when they fit beside the pixels; else the pixels alone, normalised every pass."""
    labels = N * 8
    batch_bytes = (PIXEL_BYTES + labels) * (6 if held == "floats" else 2)  # pixels + floats need 5x + labels
    loader, decodes = counted(root)
    run = SensitivityAnalysis(model, loader, levels=LEVELS, device="cpu", memory_budget_mb=budget_mb(batch_bytes))
    reference = rows(analyze(model, reference_loader(root), levels=LEVELS, device="cpu"))
    assert [(p.parameter, p.sparsity, p.top1, p.top5, p.loss, p.samples) for p in run] == reference
    batches = run.batches
    assert batches.budget <= batch_bytes
    if held == "floats":
        assert batches.held is None and batches.nbytes == 4 * PIXEL_BYTES + labels <= batches.budget
        assert all(b[0].dtype == torch.float32 for b in batches.cache)
    else:
        assert batches.cache is None and batches.held.complete
        assert batches.held.size == PIXEL_BYTES + labels <= batches.budget
        assert all(b[0].dtype == torch.uint8 for b in batches.held.held)
    assert decodes.per_image() == [1] * N


def test_over_budget_decodes_every_pass_and_says_so(root: Path, model: nn.Module,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    loader, decodes = counted(root)
    with caplog.at_level(logging.WARNING, logger="pruning_core.image_cache"):
        result = analyze(model, loader, levels=LEVELS, device="cpu", memory_budget_mb=budget_mb(PIXEL_BYTES / 2))
    assert rows(result) == rows(analyze(model, reference_loader(root), levels=LEVELS, device="cpu"))
    lines = [r.getMessage() for r in caplog.records if r.name == "pruning_core.image_cache"]
    assert len(lines) == 1 and "every evaluation pass decodes them again" in lines[0]
    assert "memory_budget_mb=0.03 or more decodes them once" in lines[0]
    counts = decodes.per_image()
    assert min(counts) > 1 and counts[BATCH:] == [counts[-1]] * (N - BATCH)  # once per pass (+1: the probe)


def test_evaluate_identical(root: Path, model: nn.Module) -> None:
    loader, decodes = counted(root)
    assert evaluate(model, loader, "cpu") == evaluate(model, reference_loader(root), "cpu")
    assert decodes.per_image() == [1] * N


def test_shuffled_epochs_the_same_with_workers(root: Path) -> None:
    """Workers change no sample and no epoch's order (a kept worker pool would: see make_loader)."""
    bundle = load_dataset("imagefolder", "test", root=str(root), size=SIZE)

    def epochs(workers: int) -> list[list[torch.Tensor]]:
        loader = make_loader(bundle, batch_size=BATCH, shuffle=True, seed=3, workers=workers)
        return [[torch.cat([x.flatten(1), y[:, None].float()], 1) for x, y in loader] for _ in range(3)]

    alone, pooled = epochs(0), epochs(2)
    assert all(torch.equal(a, b) for ea, eb in zip(alone, pooled, strict=True) for a, b in zip(ea, eb, strict=True))
    assert not torch.equal(alone[0][0], alone[1][0])  # the epochs differ from each other


def test_loader_workers_only_for_files(root: Path) -> None:
    bundle = load_dataset("imagefolder", "test", root=str(root), size=SIZE)
    loader = make_loader(bundle)
    assert loader.num_workers == file_workers(bundle.dataset) >= 0
    assert loader.pin_memory == (loader.num_workers > 0 and torch.cuda.is_available())
    assert make_loader(TensorDataset(torch.zeros(4, 1))).num_workers == 0
    x, y = bundle.dataset[5]
    assert (x.dtype, tuple(x.shape), y) == (torch.float32, (3, SIZE, SIZE), bundle.dataset.targets[5])
