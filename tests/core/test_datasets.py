"""Datasets by name: the fixed digits split, deterministic synthetic data, real on-disk formats."""

from __future__ import annotations

import gzip
import pickle
import re
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from pruning_core.dataset_options import DATASETS, check_dataset_options
from pruning_core.datasets import load_dataset, make_loader
from pruning_core.limits import LimitError, Limits
from pruning_core.names import DATASET_NAMES, DATASETS_WITH_ROOT


def _tensors(bundle) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*(bundle.dataset[i] for i in range(len(bundle))), strict=True)
    return torch.stack(xs), torch.tensor([int(y) for y in ys])


def test_digits_split_sizes_stratified_and_fixed() -> None:
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert (len(train), len(test)) == (1347, 450)
    assert (train.input_shape, train.num_classes) == ((1, 8, 8), 10)
    x_train, y_train = _tensors(train)
    x_test, y_test = _tensors(test)
    assert x_train.dtype == torch.float32 and 0.0 <= float(x_train.min()) and float(x_train.max()) <= 1.0
    # stratified: every class holds about a quarter of its images in the test split
    total = Counter(y_train.tolist()) + Counter(y_test.tolist())
    for cls, count in Counter(y_test.tolist()).items():
        assert abs(count - 0.25 * total[cls]) <= 1
    again = load_dataset("digits", "test")
    assert torch.equal(_tensors(again)[0], x_test)


def test_synthetic_is_deterministic_and_learnable() -> None:
    a = load_dataset("synthetic", "train", n="64", shape="3x16x16", classes="4", seed="7")
    b = load_dataset("synthetic", "train", n=64, shape=(3, 16, 16), classes=4, seed=7)
    xa, ya = _tensors(a)
    xb, yb = _tensors(b)
    assert xa.shape == (64, 3, 16, 16) and torch.equal(xa, xb) and torch.equal(ya, yb)
    assert (a.input_shape, a.num_classes) == ((3, 16, 16), 4)
    test = load_dataset("synthetic", "test", n=64, shape="3x16x16", classes=4, seed=7)
    assert not torch.equal(_tensors(test)[0], xa)  # same classes, different samples
    # class-dependent means: samples sit nearer their own class mean than to other classes'
    means = torch.stack([xa[ya == c].mean(0) for c in range(4)])
    xt, yt = _tensors(test)
    nearest = torch.cdist(xt.flatten(1), means.flatten(1)).argmin(1)
    assert (nearest == yt).float().mean() > 0.9


def test_bad_options_are_errors() -> None:
    with pytest.raises(ValueError, match="options: classes, n, noise, seed, shape"):
        load_dataset("synthetic", bogus="1")
    with pytest.raises(ValueError, match="shape"):
        load_dataset("synthetic", shape="3xx")
    with pytest.raises(ValueError, match="known datasets"):
        load_dataset("imagenet")


@pytest.mark.parametrize("name", ["cifar10", "mnist", "imagefolder"])
def test_missing_directory_names_the_path(name: str, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere") as err:
        load_dataset(name, "test", root=str(missing))
    assert "expected layout" in str(err.value)


def test_make_loader_subset_is_fixed_and_seeded() -> None:
    bundle = load_dataset("digits", "test")
    first = torch.cat([y for _, y in make_loader(bundle, batch_size=50, subset=100, seed=3)])
    again = torch.cat([y for _, y in make_loader(bundle, batch_size=7, subset=100, seed=3)])
    assert len(first) == 100 and torch.equal(first, again)
    assert len(make_loader(bundle, subset=10_000).dataset) == 450


def _write_cifar(root: Path) -> dict[str, tuple[np.ndarray, list[int]]]:
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(3, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=3)]
        with (base / name).open("wb") as f:  # the real files: a protocol-2 dict with bytes keys
            pickle.dump({b"batch_label": name.encode(), b"data": data, b"labels": labels,
                         b"filenames": [b"x.png"] * 3}, f, protocol=2)
        written[name] = (data, labels)
    return written


def test_cifar10_real_format(tmp_path: Path) -> None:
    written = _write_cifar(tmp_path)
    train = load_dataset("cifar10", "train", root=str(tmp_path))
    test = load_dataset("cifar10", "test", root=str(tmp_path))
    assert (len(train), len(test), test.input_shape, test.num_classes) == (15, 3, (3, 32, 32), 10)
    data, labels = written["test_batch"]
    x, y = _tensors(test)
    assert y.tolist() == labels
    expected = torch.from_numpy(data).view(3, 3, 32, 32).float() / 255
    assert torch.allclose(x, (expected - 0.5) / 0.5)
    assert train.dataset.augment and not test.dataset.augment  # train split augments by default
    assert load_dataset("cifar10", "train", root=str(tmp_path), augment="false").dataset.augment is False


def test_cifar10_refuses_a_batch_that_carries_code(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with (tmp_path / "cifar-10-batches-py" / "test_batch").open("wb") as f:
        pickle.dump({"data": Evil(), "labels": []}, f, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="only numpy arrays"):
        load_dataset("cifar10", "test", root=str(tmp_path))
    assert not marker.exists()


def _idx(array: np.ndarray) -> bytes:
    return struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_files(tmp_path: Path, gz: bool) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1], dtype=np.uint8)
    for prefix in ("train", "t10k"):
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                (raw / f"{name}.gz").write_bytes(gzip.compress(_idx(arr)))
            else:
                (raw / name).write_bytes(_idx(arr))
    bundle = load_dataset("mnist", "test", root=str(tmp_path))
    x, y = _tensors(bundle)
    assert y.tolist() == [3, 1, 4, 1] and bundle.input_shape == (1, 28, 28)
    expected = (torch.from_numpy(images).float().unsqueeze(1) / 255 - 0.1307) / 0.3081
    assert torch.allclose(x, expected)


def test_imagefolder(tmp_path: Path) -> None:
    from PIL import Image

    for cls in ("cat", "dog"):
        folder = tmp_path / "test" / cls
        folder.mkdir(parents=True)
        Image.new("RGB", (20, 16), color=(10, 200, 30)).save(folder / "a.png")
    bundle = load_dataset("imagefolder", "test", root=str(tmp_path), size="12")
    assert (len(bundle), bundle.num_classes, bundle.classes, bundle.input_shape) == (2, 2, ["cat", "dog"], (3, 12, 12))
    assert bundle.dataset[1][0].shape == (3, 12, 12) and bundle.dataset[1][1] == 1


# -- declared options (issue 13): the library refuses what the API refuses, before allocating ------

# (options, the option named, words of the message): each once a 201 whose job failed or allocated later
HOSTILE_OPTIONS = [
    ({"n": 1_000_000_000}, "n", "from 1 to 1000000 (limit max_dataset_n)"),  # an 8 GB label tensor
    ({"n": 1e20}, "n", "whole number"),
    ({"n": "1e20"}, "n", "whole number"),
    ({"shape": "0x0"}, "shape", "each at least 1"),
    ({"shape": "1x100000x100000"}, "shape", "more than the limit of 3,145,728 (max_sample_elements)"),
    ({"shape": "1x2x3x4x5"}, "shape", "1 to 4 dimensions"),
    ({"classes": 1e9}, "classes", "whole number"),
    ({"classes": 10**9}, "classes", "from 1 to 100000 (limit max_classes)"),
    ({"seed": 2**64}, "seed", "from 0 to 4294967295"),
    ({"noise": "nan"}, "noise", "finite"),
    ({"n": True}, "n", "boolean"),
    ({"n": 300_000, "shape": "3x64x64"}, "n", "more than the limit of 4096 MiB (max_dataset_mb)"),
    ({"bogus": 1}, "bogus", "its options: classes, n, noise, seed, shape"),
]


@pytest.mark.parametrize(("options", "field", "words"), HOSTILE_OPTIONS, ids=[str(o) for o, _, _ in HOSTILE_OPTIONS])
def test_load_dataset_refuses_what_the_declarations_refuse(options: dict, field: str, words: str) -> None:
    with pytest.raises(LimitError, match=re.escape(words)) as declared:
        check_dataset_options("synthetic", options)
    assert declared.value.field == field
    with pytest.raises(LimitError) as loaded:  # one definition: the same check, the same message
        load_dataset("synthetic", "test", **options)
    assert str(loaded.value) == str(declared.value)


def test_limits_are_a_parameter_and_the_budget_counts_the_shape() -> None:
    small = Limits(max_dataset_n=100, max_dataset_mb=1)
    assert len(load_dataset("synthetic", "test", n=100, shape="1x8x8", classes=2, limits=small)) == 100
    with pytest.raises(LimitError, match="from 1 to 100"):
        load_dataset("synthetic", "test", n=101, shape="1x8x8", limits=small)
    with pytest.raises(LimitError, match="more than the limit of 1 MiB"):  # 100 x 3x32x32 float32 = 1.2 MiB
        load_dataset("synthetic", "test", n=100, shape="3x32x32", limits=small)
    with pytest.raises(LimitError, match="size=5000"):
        load_dataset("imagefolder", "test", root="/nowhere", size=5000)


def test_names_come_from_the_declarations() -> None:
    assert DATASET_NAMES == tuple(DATASETS) == ("digits", "synthetic", "cifar10", "mnist", "imagefolder", "text",
                                                "synthetic-tokens")
    assert DATASETS_WITH_ROOT == ("cifar10", "mnist", "imagefolder", "text")
    assert check_dataset_options("synthetic", {"n": "64", "shape": "3x16x16", "seed": "7"}) == {
        "n": 64, "shape": (3, 16, 16), "seed": 7}  # the CLI's strings, converted once
