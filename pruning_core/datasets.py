"""Datasets by name, read from local files only (nothing is ever downloaded).

- ``digits``: scikit-learn's bundled 1,797 8x8 digit images, split once with a fixed seed and
  stratified by class: 1,347 train / 450 test (test_size=0.25, random_state=0). Pixels / 16 -> [0, 1].
- ``synthetic``: deterministic images whose mean depends on the class (so models can learn them);
  options ``n``, ``shape`` (``3x32x32``), ``classes``, ``seed``, ``noise``.
- ``cifar10``: ``root`` holding ``cifar-10-batches-py/{data_batch_1..5,test_batch}`` (python pickles,
  read with an unpickler that only admits the numpy array types those files need).
- ``mnist``: ``root`` holding the idx files (``train-images-idx3-ubyte`` ..., optionally ``.gz``),
  directly or under ``MNIST/raw`` or ``raw`` (torchvision's layout).
- ``imagefolder``: ``root/<split>/<class>/<image>`` read by torchvision's ImageFolder.

Options arrive as strings from the command line (``--dataset-opt n=1000``); their types, defaults and
ranges are declared in the torch-free ``dataset_options``, which the API checks with too.
"""

from __future__ import annotations

import codecs
import gzip
import pickle
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from pruning_core.dataset_options import SYNTHETIC_DEFAULT_N, check_dataset_options, parse_shape
from pruning_core.limits import DEFAULT_LIMITS, Limits
from pruning_core.names import DATASET_NAMES

__all__ = [
    "DatasetBundle",
    "SyntheticDataset",
    "DIGITS_TEST_SIZE",
    "DIGITS_SPLIT_SEED",
    "list_datasets",
    "load_dataset",
    "make_loader",
    "parse_shape",
]

DIGITS_TEST_SIZE = 0.25  # 1,797 images -> 1,347 train / 450 test
DIGITS_SPLIT_SEED = 0

# Distiller's normalisations, so checkpoints trained there evaluate the same here.
_CIFAR_MEAN, _CIFAR_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
_MNIST_MEAN, _MNIST_STD = 0.1307, 0.3081
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class DatasetBundle:
    """A dataset plus what a model needs to know about it (one sample's shape, class count)."""

    name: str
    dataset: Dataset
    input_shape: tuple[int, ...]
    num_classes: int
    split: str = "train"
    classes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------- options
# Declared (types, ranges, defaults) in the torch-free ``dataset_options``, which the API checks too.


def _options(dataset: str, given: dict[str, Any], limits: Limits) -> dict[str, Any]:
    """Options converted to their types with the dataset's defaults filled in; unknown keys and values
    out of range are errors (the same ones the API answers), raised before anything is allocated."""
    return check_dataset_options(dataset, given, limits, with_defaults=True)


def _require_root(dataset: str, root: Path | None, layout: str) -> Path:
    if root is None:
        raise ValueError(f"dataset {dataset!r} needs root=DIR (expected layout: {layout})")
    if not root.is_dir():
        raise _missing(dataset, root, layout)
    return root


def _missing(dataset: str, path: Path, layout: str) -> FileNotFoundError:
    """The one error for absent data: it names the path looked at and the layout expected there."""
    return FileNotFoundError(f"dataset {dataset!r}: {str(path)!r} not found (expected layout: {layout})")


# ------------------------------------------------------------------------------------------ digits


def _digits(split: str) -> DatasetBundle:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        data.images, data.target, test_size=DIGITS_TEST_SIZE, stratify=data.target, random_state=DIGITS_SPLIT_SEED
    )
    x, y = (x_train, y_train) if split == "train" else (x_test, y_test)
    images = torch.tensor(x, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(y, dtype=torch.long)
    return DatasetBundle("digits", TensorDataset(images, labels), (1, 8, 8), 10, split, [str(i) for i in range(10)])


# --------------------------------------------------------------------------------------- synthetic


class SyntheticDataset(Dataset):
    """Deterministic random images: a per-class coarse pattern plus per-sample Gaussian noise.

    Each sample is generated on demand from (seed, split, index), so 224x224 sets cost no memory
    and any subset or worker sees the same values. Class patterns depend on ``seed`` only, so the
    train and test splits share classes but not samples.
    """

    def __init__(
        self, n: int, shape: tuple[int, ...], classes: int, seed: int = 0, split: str = "train", noise: float = 1.0
    ) -> None:
        if n < 1 or classes < 1:
            raise ValueError(f"synthetic dataset needs n >= 1 and classes >= 1 (got n={n}, classes={classes})")
        self.n, self.shape, self.num_classes, self.noise = n, shape, classes, noise
        g = torch.Generator().manual_seed(seed)
        coarse = (shape[0],) + tuple(min(d, 4) for d in shape[1:])
        self.patterns = torch.randn((classes,) + coarse, generator=g)
        self._sample_seed = seed * 1_000_003 + (0 if split == "train" else 500_000_000)
        labels_gen = torch.Generator().manual_seed(self._sample_seed)
        self.labels = torch.randint(classes, (n,), generator=labels_gen)

    def __len__(self) -> int:
        return self.n

    def _mean(self, label: int) -> torch.Tensor:
        pattern = self.patterns[label]
        if pattern.shape == self.shape:
            return pattern
        for dim, size in enumerate(self.shape[1:], start=1):
            reps = -(-size // pattern.shape[dim])  # nearest-neighbour upsampling, then crop
            pattern = pattern.repeat_interleave(reps, dim=dim).narrow(dim, 0, size)
        return pattern

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < self.n:
            raise IndexError(index)
        label = int(self.labels[index])
        g = torch.Generator().manual_seed(self._sample_seed + 1 + index)
        x = self._mean(label) + self.noise * torch.randn(self.shape, generator=g)
        return x, label


def _synthetic(split: str, opts: dict[str, Any]) -> DatasetBundle:
    shape = opts["shape"]
    n = opts["n"] if opts["n"] is not None else SYNTHETIC_DEFAULT_N[split]
    ds = SyntheticDataset(n, shape, opts["classes"], opts["seed"], split, opts["noise"])
    return DatasetBundle("synthetic", ds, shape, opts["classes"], split, [str(i) for i in range(opts["classes"])])


# ------------------------------------------------------------------------------------- image files


class _NormalizedImages(Dataset):
    """uint8 images (N, C, H, W) kept compact in memory, converted and normalised per sample.

    ``augment`` applies CIFAR's standard training augmentation (4-pixel padded random crop and a
    horizontal flip), drawing from torch's global RNG so that ``set_seed`` reproduces it.
    """

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...],
        augment: bool = False,
    ) -> None:
        self.images, self.labels, self.augment = images, labels, augment
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = self.images[index].float().div_(255.0)
        if self.augment:
            h, w = x.shape[1:]
            padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
            top, left = (int(v) for v in torch.randint(0, 9, (2,)))
            x = padded[:, top : top + h, left : left + w]
            if torch.rand(()) < 0.5:
                x = x.flip(2)
        return (x - self.mean) / self.std, int(self.labels[index])


class _CifarUnpickler(pickle.Unpickler):
    """Admits only what CIFAR-10's batches need (numpy array reconstruction, bytes decoding);
    anything else is refused, so a crafted file in a dataset directory cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("numpy", "ndarray"):
            return np.ndarray
        if (module, name) == ("numpy", "dtype"):
            return np.dtype
        if (module, name) == ("_codecs", "encode"):  # how protocol-2 pickles from Python 3 store bytes
            return codecs.encode
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            core = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core
            return core.multiarray._reconstruct
        raise pickle.UnpicklingError(f"CIFAR-10 batch refers to {module}.{name}; only numpy arrays are allowed")


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR-10 file {str(path)!r} not found")
    with path.open("rb") as f:
        batch = _CifarUnpickler(f, encoding="latin1").load()
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: not a CIFAR-10 batch (expected a dict with data and labels)")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    try:
        data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch["labels"], dtype=np.int64)
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{path}: not a CIFAR-10 batch ({exc})") from None
    if len(data) != len(labels):
        raise ValueError(f"{path}: {len(data)} images but {len(labels)} labels")
    return data, labels


_CIFAR_LAYOUT = "ROOT/cifar-10-batches-py/{data_batch_1..5,test_batch} (the python version)"


def _cifar10(split: str, opts: dict[str, Any]) -> DatasetBundle:
    root = _require_root("cifar10", opts["root"], _CIFAR_LAYOUT)
    base = root / "cifar-10-batches-py"
    if not base.is_dir():
        if (root / "test_batch").is_file():
            base = root  # root is the batches directory itself
        else:
            raise _missing("cifar10", base, _CIFAR_LAYOUT)
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    parts = [_read_cifar_batch(base / name) for name in files]
    images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    augment = opts["augment"] if opts["augment"] is not None else split == "train"
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    ds = _NormalizedImages(images, labels, _CIFAR_MEAN, _CIFAR_STD, augment)
    return DatasetBundle("cifar10", ds, (3, 32, 32), 10, split, names)


_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_MNIST_LAYOUT = "ROOT[/MNIST/raw]/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]"


def _read_idx(path: Path, ndim: int) -> torch.Tensor:
    """An idx file (LeCun's MNIST format): big-endian magic 0x08<ndim>, the dims, then uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    magic = struct.unpack(">I", raw[:4])[0] if len(raw) >= 4 else None
    if magic != 0x0800 + ndim:
        raise ValueError(f"{path}: not an idx file of {ndim} dimension(s) (magic {magic!r})")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    count = int(np.prod(dims))
    if len(raw) < 4 + 4 * ndim + count:
        raise ValueError(f"{path}: truncated idx file (expected {count} bytes of data)")
    data = np.frombuffer(raw, dtype=np.uint8, count=count, offset=4 + 4 * ndim)
    return torch.from_numpy(data.copy()).view(*dims)


def _find_mnist_file(root: Path, name: str) -> Path:
    for folder in (root, root / "MNIST" / "raw", root / "raw"):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise _missing("mnist", root / f"{name}[.gz]", _MNIST_LAYOUT)


def _mnist(split: str, opts: dict[str, Any]) -> DatasetBundle:
    root = _require_root("mnist", opts["root"], _MNIST_LAYOUT)
    image_file, label_file = _MNIST_FILES[split]
    images = _read_idx(_find_mnist_file(root, image_file), 3).unsqueeze(1)
    labels = _read_idx(_find_mnist_file(root, label_file), 1).long()
    if len(images) != len(labels):
        raise ValueError(f"dataset 'mnist' under {root}: {len(images)} images but {len(labels)} labels")
    ds = _NormalizedImages(images, labels, (_MNIST_MEAN,), (_MNIST_STD,))
    return DatasetBundle("mnist", ds, (1, 28, 28), 10, split, [str(i) for i in range(10)])


def _imagefolder(split: str, opts: dict[str, Any]) -> DatasetBundle:
    from torchvision import datasets, transforms

    layout = "ROOT/<split>/<class>/<image> (e.g. ROOT/train/cat/1.png)"
    root = _require_root("imagefolder", opts["root"], layout)
    folder = root / split
    if not folder.is_dir():
        raise _missing("imagefolder", folder, layout)
    size = opts["size"]
    transform = transforms.Compose(
        [
            transforms.Resize(size),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(_IMAGENET_MEAN, _IMAGENET_STD),
        ]
    )
    ds = datasets.ImageFolder(str(folder), transform=transform)  # its loader converts to RGB
    return DatasetBundle("imagefolder", ds, (3, size, size), len(ds.classes), split, list(ds.classes))


# ------------------------------------------------------------------------------------------ public

_LOADERS: dict[str, Callable[[str, dict[str, Any]], DatasetBundle]] = {
    "digits": lambda split, _opts: _digits(split),
    "synthetic": _synthetic,
    "cifar10": _cifar10,
    "mnist": _mnist,
    "imagefolder": _imagefolder,
}
assert set(_LOADERS) == set(DATASET_NAMES), "every catalogued dataset needs a loader, and every loader an entry"


def list_datasets() -> list[str]:
    """The dataset names ``load_dataset`` accepts (the catalogue's)."""
    return list(DATASET_NAMES)


def load_dataset(name: str, split: str = "train", *, limits: Limits = DEFAULT_LIMITS, **opts: Any) -> DatasetBundle:
    """Load one split (``train`` or ``test``) of a dataset by name; options may be strings.

    Options are checked against the dataset's declarations and ``limits`` first (``n``, ``shape``,
    ``classes``... and the float32 size they describe), so a huge request fails fast instead of
    allocating."""
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASET_NAMES)}")
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; use 'train' or 'test'")
    return _LOADERS[name](split, _options(name, opts, limits))


def options_for_model(dataset: str, arch: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with ``synthetic`` data defaulting to the model's input shape and class count
    (DESIGN.md), so the CLI and the service size synthetic data the same way."""
    merged = dict(options)
    if dataset == "synthetic":
        from pruning_core.models import model_info

        info = model_info(arch)
        merged.setdefault("shape", "x".join(str(d) for d in info.input_shape))
        merged.setdefault("classes", info.num_classes)
    return merged


def make_loader(
    bundle: DatasetBundle | Dataset,
    batch_size: int = 256,
    shuffle: bool = False,
    seed: int = 0,
    subset: int | None = None,
) -> DataLoader:
    """A single-process DataLoader; ``subset`` keeps a fixed seeded random subset of that many samples.

    The shuffle order comes from a generator seeded with ``seed`` (``train`` re-seeds it from its own
    seed so the same training seed gives the same weights even when a loader is reused).
    """
    dataset = bundle.dataset if isinstance(bundle, DatasetBundle) else bundle
    total = len(dataset)  # type: ignore[arg-type]
    if subset is not None and subset < total:
        if subset < 1:
            raise ValueError(f"subset must be >= 1 (got {subset})")
        picked = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:subset]
        dataset = Subset(dataset, sorted(picked.tolist()))
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=0)
