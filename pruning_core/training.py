"""Training and evaluation loops: the one place that measures top1/top5/loss, so every job agrees."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from pruning_core.image_cache import pixel_loader
from pruning_core.tasks import IGNORE_INDEX

if TYPE_CHECKING:
    from pruning_core.masks import MaskSet

__all__ = ["EpochMetrics", "EvalResult", "evaluate", "resolve_device", "set_seed", "train"]

# A scheduler bound to the optimizer passed in, a factory taking the optimizer, or "cosine".
SchedulerLike = (
    torch.optim.lr_scheduler.LRScheduler
    | torch.optim.lr_scheduler.ReduceLROnPlateau
    | Callable[[torch.optim.Optimizer], Any]
    | str
    | None
)


@dataclass(frozen=True)
class EvalResult:
    """Distiller's three numbers (top1/top5 in percent, mean cross-entropy) and the sample count."""

    top1: float
    top5: float
    loss: float
    samples: int


@dataclass(frozen=True)
class EpochMetrics:
    """One epoch: its lr, the mean training loss and, with an eval loader, the evaluation after it."""

    epoch: int
    lr: float
    train_loss: float
    top1: float | None = None
    top5: float | None = None
    loss: float | None = None
    seconds: float = 0.0


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``'auto'``/None picks CUDA when present, else CPU; asking for absent CUDA is an error."""
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda'") from None


def set_seed(seed: int) -> None:
    """Seed Python, numpy and torch (all devices) so a run can be repeated exactly."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _logits(output: Any) -> torch.Tensor:
    """Models such as GoogLeNet return a named tuple in training mode; the logits are what we score."""
    return output.logits if hasattr(output, "logits") else output


def _scored(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What is scored: a classifier's logits [B, C] against [B] as they are; a language model's [B, T, V]
    against next-token ids [B, T] per token, padding (:data:`~pruning_core.tasks.IGNORE_INDEX`) left out, so
    ``loss`` is the mean token cross-entropy (perplexity = exp(loss)) and top1 the next-token accuracy."""
    if logits.dim() == 3 and targets.dim() == 2:
        keep = targets.flatten() != IGNORE_INDEX
        return logits.flatten(0, 1)[keep], targets.flatten()[keep]
    return logits, targets


def _batches(loader: Iterable[Any], device: torch.device) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    for inputs, targets in loader:
        yield inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable[Any], device: str | torch.device | None = None) -> EvalResult:
    """Top1/top5 accuracy (percent; top5 is top-min(5, classes)) and mean per-sample loss; for a language
    model per token (:func:`_scored`).

    The model is put in eval mode (and left there) so BatchNorm uses its running statistics.
    """
    dev = resolve_device(device) if device is not None else _model_device(model)
    model.eval()
    correct1 = correct5 = 0
    loss_sum = 0.0
    samples = 0
    pixels = pixel_loader(loader)  # image files: uint8 batches normalised on the device, the same floats
    normalise = pixels[1] if pixels is not None else (lambda x: x)
    for inputs, targets in _batches(pixels[0] if pixels is not None else loader, dev):
        logits, targets = _scored(_logits(model(normalise(inputs))), targets)
        loss_sum += float(nn.functional.cross_entropy(logits, targets, reduction="sum"))
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hits = top.eq(targets.unsqueeze(1))
        correct1 += int(hits[:, 0].sum())
        correct5 += int(hits.any(dim=1).sum())
        samples += targets.shape[0]
    if samples == 0:
        raise ValueError("evaluate: the loader yielded no samples")
    return EvalResult(100.0 * correct1 / samples, 100.0 * correct5 / samples, loss_sum / samples, samples)


def _model_device(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def make_optimizer(
    model: nn.Module, optimizer: str | torch.optim.Optimizer, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    """The optimizer a job names ('sgd', 'adam', 'adamw') over ``model``'s parameters, or the given instance."""
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    params = [p for p in model.parameters() if p.requires_grad]
    name = optimizer.lower()
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {optimizer!r}; use 'sgd', 'adam' or 'adamw'")


def _make_scheduler(scheduler: SchedulerLike, optimizer: torch.optim.Optimizer, epochs: int) -> Any:
    """A scheduler instance is used as is; a callable gets the optimizer; ``'cosine'`` is built here."""
    if scheduler is None:
        return None
    if isinstance(scheduler, str):
        if scheduler.lower() == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
        raise ValueError(f"unknown scheduler {scheduler!r}; pass 'cosine', a scheduler or a factory")
    if hasattr(scheduler, "step"):
        return scheduler
    return scheduler(optimizer)


def _reseed_loader(loader: Iterable[Any], seed: int) -> None:
    """Reset a DataLoader's shuffle generator so a repeated ``train`` call sees the same order."""
    generator = getattr(loader, "generator", None)
    if isinstance(generator, torch.Generator):
        generator.manual_seed(seed)


def train(
    model: nn.Module,
    train_loader: DataLoader | Iterable[Any],
    *,
    epochs: int,
    optimizer: str | torch.optim.Optimizer = "sgd",
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    scheduler: SchedulerLike = None,
    masks: MaskSet | None = None,
    eval_loader: Iterable[Any] | None = None,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    on_epoch_start: Callable[[int], None] | None = None,
    loss_hook: Callable[[torch.Tensor], torch.Tensor] | None = None,
    seed: int | None = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> list[EpochMetrics]:
    """Train with cross-entropy for ``epochs`` epochs (a language model's per token); returns one EpochMetrics
    per epoch.

    ``seed`` seeds torch/numpy/random and the loader's shuffle generator, so the same model
    initialisation and seed give identical weights (``None`` leaves the RNGs alone). ``masks`` keeps
    pruned weights at exactly zero throughout (applied at the start of every epoch, after
    ``on_epoch_start``, which is where a pruning schedule updates them). The scheduler steps once
    per epoch (ReduceLROnPlateau with the eval loss, or the train loss without an eval loader).
    ``loss_hook(loss)`` returns what is backpropagated instead of the batch loss (e.g. plus a
    regularization penalty); ``train_loss`` still reports the cross-entropy alone.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1 (got {epochs})")
    from tqdm.auto import tqdm

    dev = resolve_device(device)
    if seed is not None:
        set_seed(seed)
        _reseed_loader(train_loader, seed)
    model.to(dev)
    opt = make_optimizer(model, optimizer, lr, momentum, weight_decay)
    sched = _make_scheduler(scheduler, opt, epochs)
    plateau = isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau)
    history: list[EpochMetrics] = []
    if masks is not None:
        masks.apply()
        masks.attach(opt)
    bar = tqdm(range(1, epochs + 1), desc="train", unit="epoch", disable=not progress, leave=False)
    try:
        for epoch in bar:
            start = time.perf_counter()
            if on_epoch_start is not None:
                on_epoch_start(epoch)
            if masks is not None:
                masks.apply()
            lr_now = float(opt.param_groups[0]["lr"])
            model.train()
            loss_sum, seen = 0.0, 0
            for inputs, targets in _batches(train_loader, dev):
                opt.zero_grad(set_to_none=True)
                logits, targets = _scored(_logits(model(inputs)), targets)
                loss = nn.functional.cross_entropy(logits, targets)
                (loss_hook(loss) if loss_hook is not None else loss).backward()
                opt.step()
                loss_sum += float(loss.detach()) * targets.shape[0]
                seen += targets.shape[0]
            if seen == 0:
                raise ValueError("train: the loader yielded no samples")
            train_loss = loss_sum / seen
            result = evaluate(model, eval_loader, dev) if eval_loader is not None else None
            if sched is not None:
                if plateau:
                    sched.step(result.loss if result is not None else train_loss)
                else:
                    sched.step()
            metrics = EpochMetrics(
                epoch=epoch,
                lr=lr_now,
                train_loss=train_loss,
                top1=result.top1 if result else None,
                top5=result.top5 if result else None,
                loss=result.loss if result else None,
                seconds=time.perf_counter() - start,
            )
            history.append(metrics)
            bar.set_postfix(loss=f"{train_loss:.4f}", top1=f"{metrics.top1:.2f}" if result else "-")
            if on_epoch is not None:
                on_epoch(metrics)
    finally:
        bar.close()
        if masks is not None:
            masks.detach()
    return history
