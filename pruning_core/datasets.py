"""Datasets by name, read from local files only (nothing is ever downloaded).

- ``digits``: scikit-learn's bundled 1,797 8x8 digit images, split once with a fixed seed and
  stratified by class: 1,347 train / 450 test (test_size=0.25, random_state=0). Pixels / 16 -> [0, 1].
- ``synthetic``: deterministic images whose mean depends on the class (so models can learn them);
  options ``n``, ``shape`` (``3x32x32``), ``classes``, ``seed``, ``noise``.
- ``cifar10``: ``root`` holding ``cifar-10-batches-py/{data_batch_1..5,test_batch}`` (python pickles,
  read with an unpickler that only admits the numpy array types those files need).
- ``mnist``: ``root`` holding the idx files (``train-images-idx3-ubyte`` ..., optionally ``.gz``),
  directly or under ``MNIST/raw`` or ``raw`` (torchvision's layout).
- ``imagefolder``: ``root/<split>/<class>/<image>`` read by torchvision's ImageFolder, resized and centre-cropped
  to ``size`` (``pruning_core.image_cache``: decoded once per sweep where the memory budget allows).
- ``text`` (language-model): ``root``, a local text file (its last ``test_fraction`` of words held out for
  test) or a directory holding ``train.txt`` and ``test.txt``, tokenised by words (:class:`Vocabulary`, built
  from the train split) and cut into sequences of ``seq_len`` tokens: ``x = tokens[i:i+T]``,
  ``y = tokens[i+1:i+T+1]``.
- ``synthetic-tokens`` (language-model): seeded random token ids (options ``vocab``, ``seq_len``, ``n``).
- whatever operators' packages declare in the ``prunescope.datasets`` entry-point group: each entry names
  ``factory(split, **options) -> Dataset`` (optionally with ``input_shape``, ``num_classes``, ``task``).

A bundle says what a model needs: one sample's shape, the class count (a language model's vocabulary size,
so the model is built with ``num_classes=vocab``) and its ``task`` (``pruning_core.tasks``).

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

from pruning_core.dataset_options import (
    SYNTHETIC_DEFAULT_N,
    SYNTHETIC_TOKENS_DEFAULT_N,
    TASKS,
    check_dataset_options,
    dataset_task,
    parse_shape,
)
from pruning_core.image_cache import ImageFiles, file_workers
from pruning_core.limits import DEFAULT_LIMITS, Limits
from pruning_core.names import (
    DATASET_NAMES,
    DATASET_PLUGIN_GROUP,
    EXPORTED_ARCHITECTURE,
    dataset_entry_points,
    plugin_datasets,
)

__all__ = [
    "DatasetBundle",
    "dataset_task",
    "SyntheticDataset",
    "TokenSequences",
    "Vocabulary",
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
    """A dataset plus what a model needs to know about it: one sample's shape, the class count (a language
    model's vocabulary size) and the task its samples are for. A plugin dataset that declares no shape or
    class count has ``None`` there (the model is then built with its own defaults)."""

    name: str
    dataset: Dataset
    input_shape: tuple[int, ...] | None
    num_classes: int | None
    split: str = "train"
    classes: list[str] = field(default_factory=list)  # class names; a text dataset's vocabulary
    task: str = "classification"

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
    layout = "ROOT/<split>/<class>/<image> (e.g. ROOT/train/cat/1.png)"
    root = _require_root("imagefolder", opts["root"], layout)
    folder = root / split
    if not folder.is_dir():
        raise _missing("imagefolder", folder, layout)
    size = opts["size"]
    # Resize, CenterCrop, ToTensor, Normalize: the pixels decoded once, normalised per sample or per batch
    ds = ImageFiles(folder, size, _IMAGENET_MEAN, _IMAGENET_STD)
    return DatasetBundle("imagefolder", ds, (3, size, size), len(ds.classes), split, list(ds.classes))


# ------------------------------------------------------------------------------------------ tokens


class TokenSequences(Dataset):
    """A token stream cut into sequences of ``seq_len``: item i is ``(tokens[iT:iT+T], tokens[iT+1:iT+T+1])``,
    non-overlapping, the trailing tokens that fill no sequence dropped."""

    def __init__(self, tokens: torch.Tensor, seq_len: int) -> None:
        self.tokens, self.seq_len = tokens.long(), seq_len
        self.count = max(len(tokens) - 1, 0) // seq_len

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.count:
            raise IndexError(index)
        start = index * self.seq_len
        chunk = self.tokens[start : start + self.seq_len + 1]
        return chunk[:-1], chunk[1:]


@dataclass
class Vocabulary:
    """A plain word-level vocabulary: ``<unk>`` (id 0) for any word it lacks, ``<eos>`` (id 1) ending each
    line, then the training words by falling frequency (ties alphabetical), at most ``max_size`` in all."""

    words: list[str]

    UNK = "<unk>"
    EOS = "<eos>"

    @staticmethod
    def split(text: str) -> list[str]:
        """Whitespace-separated words, ``<eos>`` after each non-empty line."""
        out: list[str] = []
        for line in text.splitlines():
            words = line.split()
            if words:
                out += [*words, Vocabulary.EOS]
        return out

    @classmethod
    def build(cls, words: list[str], max_size: int) -> Vocabulary:
        counts: dict[str, int] = {}
        for w in words:
            counts[w] = counts.get(w, 0) + 1
        counts.pop(cls.UNK, None)
        counts.pop(cls.EOS, None)
        ranked = sorted(counts, key=lambda w: (-counts[w], w))
        return cls([cls.UNK, cls.EOS, *ranked[: max(max_size - 2, 0)]])

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, words: list[str]) -> torch.Tensor:
        index = {w: i for i, w in enumerate(self.words)}
        return torch.tensor([index.get(w, 0) for w in words], dtype=torch.long)


_TEXT_LAYOUT = "root=FILE (split into train and test), or ROOT/{train,test}.txt"


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise _missing("text", path, _TEXT_LAYOUT)
    return path.read_text(encoding="utf-8", errors="replace")


def _text(split: str, opts: dict[str, Any]) -> DatasetBundle:
    root = opts["root"]
    if root is None:
        raise ValueError(f"dataset 'text' needs root=FILE or root=DIR (expected layout: {_TEXT_LAYOUT})")
    if root.is_file():
        words = Vocabulary.split(_read_text(root))
        cut = int(round(len(words) * (1.0 - opts["test_fraction"])))
        train, test = words[:cut], words[cut:]
    else:
        base = _require_root("text", root, _TEXT_LAYOUT)
        train = Vocabulary.split(_read_text(base / "train.txt"))
        test = Vocabulary.split(_read_text(base / "test.txt")) if split == "test" else []
    vocab = Vocabulary.build(train, opts["max_vocab"])
    seq_len = opts["seq_len"]
    ds = TokenSequences(vocab.encode(train if split == "train" else test), seq_len)
    if len(ds) == 0:
        raise ValueError(f"dataset 'text': the {split} split has {len(train if split == 'train' else test)} tokens, "
                         f"too few for one sequence of seq_len={seq_len} (+1); use a smaller seq_len or more text")
    return DatasetBundle("text", ds, (seq_len,), len(vocab), split, list(vocab.words), "language-model")


def _synthetic_tokens(split: str, opts: dict[str, Any]) -> DatasetBundle:
    n = opts["n"] if opts["n"] is not None else SYNTHETIC_TOKENS_DEFAULT_N[split]
    seq_len, vocab = opts["seq_len"], opts["vocab"]
    gen = torch.Generator().manual_seed(opts["seed"] * 2 + (0 if split == "train" else 1))
    stream = torch.randint(vocab, (n * seq_len + 1,), generator=gen)
    ds = TokenSequences(stream, seq_len)
    return DatasetBundle("synthetic-tokens", ds, (seq_len,), vocab, split, [str(i) for i in range(vocab)],
                         "language-model")


# ----------------------------------------------------------------------------------------- plugins


def _plugin(name: str, split: str, options: dict[str, Any]) -> DatasetBundle:
    """A ``prunescope.datasets`` entry's dataset: ``factory(split, **options)``, its options as given. Its
    ``input_shape``, ``num_classes`` and ``task`` are read from the dataset, else the factory; an
    undeclared shape is the first sample's input's."""
    ep = dataset_entry_points()[name]
    where = f"{DATASET_PLUGIN_GROUP} entry {name!r} ({ep.value})"
    factory = ep.load()
    if not callable(factory):
        raise TypeError(f"{where} is not callable: point it at a function that returns a torch Dataset")
    ds = factory(split, **options)
    if not hasattr(ds, "__getitem__") or not hasattr(ds, "__len__"):
        raise TypeError(f"{where} returned {type(ds).__name__}, not a Dataset (with __getitem__ and __len__)")

    def declared(attr: str) -> Any:
        return getattr(ds, attr, getattr(factory, attr, None))

    task = declared("task") or "classification"
    if task not in TASKS:
        raise ValueError(f"{where}: task must be one of {', '.join(TASKS)}, not {task!r}")
    shape = declared("input_shape")
    if shape is None and len(ds) > 0:
        first = ds[0]
        x = first[0] if isinstance(first, (tuple, list)) else first
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else None
    classes = declared("num_classes")
    if classes is not None and (not isinstance(classes, int) or isinstance(classes, bool) or classes < 1):
        raise ValueError(f"{where}: num_classes must be a positive int, not {classes!r}")
    return DatasetBundle(name, ds, tuple(shape) if shape is not None else None, classes, split, task=task)


# ------------------------------------------------------------------------------------------ public

_LOADERS: dict[str, Callable[[str, dict[str, Any]], DatasetBundle]] = {
    "digits": lambda split, _opts: _digits(split),
    "synthetic": _synthetic,
    "cifar10": _cifar10,
    "mnist": _mnist,
    "imagefolder": _imagefolder,
    "text": _text,
    "synthetic-tokens": _synthetic_tokens,
}
assert set(_LOADERS) == set(DATASET_NAMES), "every catalogued dataset needs a loader, and every loader an entry"


def list_datasets() -> list[str]:
    """The dataset names ``load_dataset`` accepts: the catalogue's, then the installed plugins'."""
    return [*DATASET_NAMES, *plugin_datasets()]


def load_dataset(name: str, split: str = "train", *, limits: Limits = DEFAULT_LIMITS, **opts: Any) -> DatasetBundle:
    """Load one split (``train`` or ``test``) of a dataset by name; options may be strings.

    Options are checked against the dataset's declarations and ``limits`` first (``n``, ``shape``,
    ``classes``... and the float32 size they describe), so a huge request fails fast instead of
    allocating."""
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; use 'train' or 'test'")
    if name not in _LOADERS:
        if name in dataset_entry_points():
            return _plugin(name, split, opts)
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(list_datasets())}")
    return _LOADERS[name](split, _options(name, opts, limits))


def options_for_model(dataset: str, arch: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with ``synthetic`` data defaulting to the model's input shape and class count
    (DESIGN.md), and ``synthetic-tokens`` to a language model's context and vocabulary, so the CLI and the
    service size synthetic data the same way."""
    merged = dict(options)
    if dataset in ("synthetic", "synthetic-tokens") and arch != EXPORTED_ARCHITECTURE:  # a program: as given
        from pruning_core.models import model_info

        info = model_info(arch)
        if dataset == "synthetic":
            merged.setdefault("shape", "x".join(str(d) for d in info.input_shape))
            merged.setdefault("classes", info.num_classes)
        elif info.task == "language-model":
            merged.setdefault("seq_len", info.input_shape[0])
            merged.setdefault("vocab", info.num_classes)
    return merged


def make_loader(
    bundle: DatasetBundle | Dataset,
    batch_size: int = 256,
    shuffle: bool = False,
    seed: int = 0,
    subset: int | None = None,
    workers: int | None = None,
    pin_memory: bool | None = None,
) -> DataLoader:
    """A DataLoader; ``subset`` keeps a fixed seeded random subset of that many samples.

    The shuffle order comes from a generator seeded with ``seed`` (``train`` re-seeds it from its own
    seed so the same training seed gives the same weights even when a loader is reused). ``workers``
    processes (default ``image_cache.file_workers``: one per spare CPU for image files, none for data held
    in memory, where a process only adds copies and would move the global RNG's augmentations out of reach
    of ``set_seed``) load the samples; ``pin_memory`` (default: with workers, when CUDA is present) stages
    their batches for asynchronous copies to the GPU. Neither changes a sample or the order, epoch after
    epoch, so results are the same whatever they are.
    """
    dataset = bundle.dataset if isinstance(bundle, DatasetBundle) else bundle
    total = len(dataset)  # type: ignore[arg-type]
    if subset is not None and subset < total:
        if subset < 1:
            raise ValueError(f"subset must be >= 1 (got {subset})")
        picked = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:subset]
        dataset = Subset(dataset, sorted(picked.tolist()))
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    workers = file_workers(dataset) if workers is None else workers
    if workers < 0:
        raise ValueError(f"workers must be >= 0 (got {workers})")
    pin = (workers > 0 and torch.cuda.is_available()) if pin_memory is None else pin_memory
    # Workers are kept between passes unless shuffling: a kept iterator draws its workers' seed from the shuffle
    # generator once, not once per epoch, so later epochs would come in another order than without workers.
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=workers,
                      pin_memory=pin, persistent_workers=workers > 0 and not shuffle)
