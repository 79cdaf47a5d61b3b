"""Image files decoded once per sweep: their uint8 pixels held within a memory budget, normalised per batch.

An ImageFolder sweep used to decode every JPEG once per evaluation pass whenever the float32 batches did not
fit the memory budget (ImageNet's 50,000 validation images are 30 GB as float32 at 224x224, 7.5 GB as uint8).
The pieces that make it decode once:

- :class:`ImageFiles`, the ``imagefolder`` dataset: each image decoded, resized and centre-cropped to uint8
  CHW pixels. Indexing it gives the normalised float sample, exactly torchvision's ``ToTensor`` +
  ``Normalize`` of those pixels, so every consumer of samples sees what it saw before; its ``pixels`` view
  gives the uint8 sample, for loaders whose batches :class:`Normalise` finishes on the device.
- :class:`Normalise`: uint8 -> float32, / 255, - mean, / std: the very IEEE operations ``ToTensor`` and
  ``Normalize`` do, hence bit-identical on the CPU and, IEEE division being exact-rounded there too, on
  CUDA: the divisors are tensors on the batch's device, as CUDA turns a division by a CPU scalar into a
  multiplication by its reciprocal, which can be a bit off.
- :func:`pixel_loader`: a loader's twin over the pixels of the same samples, in the same batches and order.
- :class:`HeldPass`: one pass's batches kept while they fit a budget and replayed by every later pass; a
  pass given up part way (a probe of the first batch) leaves its batches held and the next one goes on with
  the same loader iterator, so nothing is read twice while the batches fit.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset, default_collate

from pruning_core.cores import usable_cores

log = logging.getLogger(__name__)

__all__ = ["DecodeCounts", "HeldPass", "ImageFiles", "Normalise", "Pixels", "file_workers", "log_decoded_over_budget",
           "pixel_loader"]

#: At most this many loader processes decode image files (each holds a copy of the dataset's file list).
MAX_DECODE_WORKERS = 8


class Normalise:
    """``(pixels / 255 - mean) / std`` in float32 for uint8 pixels ``[..., C, H, W]``, on their device."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self._constants: dict[torch.device, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if device not in self._constants:  # tensors, never CPU scalars: see the module's docstring
            scale = torch.tensor(255.0, dtype=torch.float32, device=device)
            self._constants[device] = (scale, self.mean.to(device), self.std.to(device))
        return self._constants[device]

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        scale, mean, std = self._on(pixels.device)
        return pixels.to(torch.float32).div_(scale).sub_(mean).div_(std)

    def __getstate__(self) -> dict[str, Any]:  # loader processes rebuild the per-device constants
        return {"mean": self.mean, "std": self.std, "_constants": {}}


class ImageFiles(Dataset):
    """``root/<class>/<image>`` (torchvision's ImageFolder, images converted to RGB) resized to ``size`` and
    centre-cropped, as uint8 pixels; indexing gives the normalised float sample (see the module)."""

    decodes_files = True  # what makes ``file_workers`` give its loaders worker processes

    def __init__(self, root: str | Path, size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        from torchvision import datasets, transforms

        decode = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.PILToTensor()])
        self.folder = datasets.ImageFolder(str(root), transform=decode)
        self.size, self.normalise = size, Normalise(mean, std)

    @property
    def classes(self) -> list[str]:
        return self.folder.classes

    @property
    def class_to_idx(self) -> dict[str, int]:
        return self.folder.class_to_idx

    @property
    def samples(self) -> list[tuple[str, int]]:
        return self.folder.samples

    @property
    def targets(self) -> list[int]:
        return self.folder.targets

    def __len__(self) -> int:
        return len(self.folder)

    def decode(self, index: int) -> tuple[torch.Tensor, int]:
        """One image read from its file and decoded: (uint8 pixels [C, size, size], class index)."""
        pixels, label = self.folder[index]
        return pixels.contiguous(), label

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        pixels, label = self.decode(index)
        return self.normalise(pixels), label

    @property
    def pixels(self) -> Pixels:
        return Pixels(self)


class Pixels(Dataset):
    """The uint8 samples of an :class:`ImageFiles`; ``batch_transform`` makes their batches its float ones."""

    decodes_files = True

    def __init__(self, files: ImageFiles) -> None:
        self.files, self.batch_transform = files, files.normalise

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.files.decode(index)


def _unwrapped(dataset: Any) -> tuple[Any, list[Sequence[int]]]:
    """The dataset under any ``Subset`` s, and their index lists, outermost first."""
    indices = []
    while isinstance(dataset, Subset):
        indices.append(dataset.indices)
        dataset = dataset.dataset
    return dataset, indices


def file_workers(dataset: Any) -> int:
    """Loader processes worth having for ``dataset``: one per spare CPU (at most ``MAX_DECODE_WORKERS``)
    for data decoded from files, none for data already in memory (a process would only add copies)."""
    if not getattr(_unwrapped(dataset)[0], "decodes_files", False):
        return 0
    return max(0, min(MAX_DECODE_WORKERS, usable_cores() - 1))


def pixel_loader(loader: Any) -> tuple[DataLoader, Normalise] | None:
    """``loader``'s twin yielding uint8 pixel batches (the same samples, batches, order and workers) and the
    transform that makes them ``loader``'s float batches; None unless ``loader`` is a batching DataLoader
    with the default collation over (subsets of) :class:`ImageFiles`."""
    if not isinstance(loader, DataLoader) or loader.batch_sampler is None or loader.collate_fn is not default_collate:
        return None
    files, indices = _unwrapped(loader.dataset)
    if not isinstance(files, ImageFiles):
        return None
    pixels = files.pixels
    dataset: Dataset = pixels
    for idx in reversed(indices):
        dataset = Subset(dataset, idx)
    workers = loader.num_workers
    extra = {"prefetch_factor": loader.prefetch_factor, "persistent_workers": loader.persistent_workers,
             "multiprocessing_context": loader.multiprocessing_context} if workers else {}
    # the same batch sampler, and the generator each iterator draws its workers' seed from: the same order
    twin = DataLoader(dataset, batch_sampler=loader.batch_sampler, num_workers=workers, generator=loader.generator,
                      pin_memory=loader.pin_memory, worker_init_fn=loader.worker_init_fn, timeout=loader.timeout,
                      **extra)
    return twin, pixels.batch_transform


class HeldPass:
    """The batches of a pass over ``loader``, each made by ``move`` (e.g. put on the device), held while
    their bytes (``nbytes``) fit ``budget`` so that later passes replay them instead of reading the loader.

    When they do not fit, every pass reads the loader again, and ``over_budget(the pass's bytes, budget)`` is
    called once, at the end of the first whole pass read so."""

    def __init__(self, loader: Any, move: Callable[[Any], Any], nbytes: Callable[[Any], int], budget: int,
                 over_budget: Callable[[int, int], None] | None = None) -> None:
        self.loader, self.move, self.nbytes, self.budget, self.over_budget = loader, move, nbytes, budget, over_budget
        self.held: list[Any] | None = []
        self.size = 0  # bytes held
        self.complete = False  # the held batches are the whole pass
        self._source: Iterator[Any] | None = None  # the loader iterator the held batches came from
        self._told = False

    def __iter__(self) -> Iterator[Any]:
        if self.held is None:
            yield from self._unheld(iter(self.loader), None, 0)
            return
        i = 0
        while self.held is not None:
            if i < len(self.held):
                i += 1
                yield self.held[i - 1]
                continue
            if self.complete:
                return
            if self._source is None:
                self._source = iter(self.loader)
            try:
                batch = self.move(next(self._source))
            except StopIteration:
                self._source, self.complete = None, True
                return
            size = self.nbytes(batch)
            if self.size + size <= self.budget:
                self.held.append(batch)
                self.size += size
                continue
            source, total = self._source, self.size + size
            self.held, self.size, self._source = None, 0, None  # over the budget: hold nothing
            yield from self._unheld(source, batch, total)

    def _unheld(self, source: Iterator[Any], first: Any, total: int) -> Iterator[Any]:
        """A pass read from the loader (after ``first``, when given), its bytes counted for ``over_budget``."""
        if first is not None:
            yield first
        for raw in source:
            batch = self.move(raw)
            total += self.nbytes(batch)
            yield batch
        if self.over_budget is not None and not self._told:
            self._told = True
            self.over_budget(total, self.budget)


def log_decoded_over_budget(total: int, budget: int) -> None:
    """The clear line for a sweep whose decoded images do not fit: why every pass decodes them again."""
    mib = 2**20
    log.warning("the decoded images (%.4g MiB as uint8) exceed the memory budget for batches (%.4g MiB, half of "
                "memory_budget_mb): every evaluation pass decodes them again; memory_budget_mb=%.2f or more decodes "
                "them once", total / mib, budget / mib, math.ceil(200 * total / mib) / 100)


class DecodeCounts:
    """How many times each image of an :class:`ImageFiles` (or a torchvision ``ImageFolder``) has been read from
    its file since this wrapped its image-open function, counted across the loader's processes (a shared array,
    which forked workers inherit: Linux's default start method)."""

    def __init__(self, files: Any) -> None:
        import multiprocessing

        self.folder = getattr(files, "folder", files)
        self.counts = multiprocessing.Array("q", len(self.folder))
        self._index = {path: i for i, (path, _) in enumerate(self.folder.samples)}
        self._open, self.folder.loader = self.folder.loader, self._counted

    def _counted(self, path: str) -> Any:
        with self.counts.get_lock():
            self.counts[self._index[path]] += 1
        return self._open(path)

    def per_image(self) -> list[int]:
        return list(self.counts)

    def reset(self) -> None:
        self.counts[:] = [0] * len(self.counts)
