"""The library call behind a prune job: prune per a schedule while fine-tuning, then report.

``run_prune`` is what the CLI and the service worker both call: one code path. It evaluates the
dense model, drives :class:`~pruning_core.scheduler.CompressionScheduler` through
:func:`pruning_core.training.train` (masks attached, so pruned weights stay zero and get no
gradient), records per-epoch metrics, and optionally thins the result physically.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from . import thinning as _thinning
from .masks import MaskSet
from .metrics import SummaryRow, model_sparsity, sparsity_summary
from .schedule import PRUNER_CLASSES, Schedule, check_extensions
from .scheduler import CompressionScheduler
from .thinning import ThinningReport, mask_dependents
from .training import EpochMetrics, EvalResult, evaluate, make_optimizer, resolve_device, train


@dataclass
class PruneEpoch:
    """Metrics after one epoch (0-based, as in the schedule); ``pruned`` = parameters pruned at its start."""

    epoch: int
    lr: float
    train_loss: float | None
    top1: float | None
    top5: float | None
    loss: float | None
    sparsity: float  # overall weight sparsity (conv/linear weights), 0..1
    pruned: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    regularization_loss: float | None = None  # mean regularizer penalty per minibatch (None: no regularizer)
    thinned: dict[str, int] | None = None  # channels removed per layer by a thinning extension at its start


@dataclass
class PruneResult:
    """Everything a prune job reports: before/after metrics, per-epoch history, summary, thinning."""

    baseline: EvalResult
    final: EvalResult
    epochs: list[PruneEpoch]
    sparsity: float
    summary: list[SummaryRow]
    masks: MaskSet
    thinning: ThinningReport | None = None
    thinned: EvalResult | None = None
    thinned_model: nn.Module | None = None
    warnings: list[str] = field(default_factory=list)
    renames: list[tuple[str, str]] = field(default_factory=list)  # (schedule name, model name)
    schedule_thinning: dict[int, ThinningReport] = field(default_factory=dict)  # epoch -> report (extensions)

    def thinning_history(self) -> list:
        """Torch-Pruning history of the schedule's thinning extensions, in order (for rebuild_thinned)."""
        return [h for epoch in sorted(self.schedule_thinning) for h in self.schedule_thinning[epoch].history]

    def metrics(self) -> dict[str, Any]:
        """Plain data (for checkpoint metadata and JSON): no tensors, no modules."""
        return {
            "baseline": asdict(self.baseline), "final": asdict(self.final),
            "epochs": [asdict(e) for e in self.epochs], "sparsity": self.sparsity,
            "thinning": self.thinning.to_dict() if self.thinning else None,
            "thinned": asdict(self.thinned) if self.thinned else None, "warnings": list(self.warnings),
            "renames": [list(r) for r in self.renames],
            "schedule_thinning": {str(e): r.to_dict() for e, r in self.schedule_thinning.items()},
        }


def _structured(schedule: Schedule) -> bool:
    return any("group_type" in PRUNER_CLASSES[p.cls].argument_names() for p in schedule.pruners.values())


def _example_batch(loader: Iterable[Any], batch: int) -> torch.Tensor:
    inputs = next(iter(loader))[0]
    return inputs[:batch].detach().cpu().clone()


def _check_epochs(schedule: Schedule, epochs: int, start_epoch: int = 0) -> list[str]:
    notes = []
    end = start_epoch + epochs
    for policy in schedule.policies:
        late = [e for e in policy.active_epochs() if e >= max(end, 1)]
        if policy.kind == "pruner" and late:
            notes.append(f"pruner policy {policy.instance_name!r} is scheduled up to epoch {max(late)} but only "
                         f"epochs {start_epoch}..{end - 1} run: it will not reach its final sparsity")
    return notes


def run_prune(
    model: nn.Module,
    train_loader: Iterable[Any],
    test_loader: Iterable[Any],
    schedule: Schedule,
    epochs: int,
    *,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    optimizer: str = "sgd",
    thin: bool = False,
    follow_dependencies: bool | None = None,
    latency_batch: int = 1,
    latency_repeats: int = 30,
    on_epoch: Callable[[PruneEpoch], None] | None = None,
    device: str | torch.device | None = None,
    seed: int | None = 0,
    progress: bool = True,
    start_epoch: int = 0,
    arch: str | None = None,
    dataset: str | None = None,
) -> PruneResult:
    """Prune ``model`` in place following ``schedule`` over ``epochs`` epochs of fine-tuning.

    ``epochs=0`` applies the epoch-0 pruners and evaluates without training (one-shot, no
    fine-tuning). ``follow_dependencies`` (default: when the schedule prunes filters/channels) also
    zeros the BatchNorm channels after pruned filters, so the masked model equals its thinned form.
    ``thin`` then removes dead channels with Torch-Pruning (on a CPU copy) and measures params, MACs
    and median CPU latency before and after; ``result.thinned_model`` is that copy.

    ``start_epoch`` jumps into the schedule: epochs ``0 .. start_epoch - 1`` are replayed without
    training (their pruning, thinning and lr steps), then epochs ``start_epoch ..`` train. Thinning
    extensions (FilterRemover ...) thin ``model`` itself at their epochs; their ``arch``/``dataset``
    are checked against ``arch``/``dataset`` when given (a mismatch is a ScheduleError).
    Regularizers add their penalty to the loss; ``PruneEpoch.regularization_loss`` reports it.
    """
    if epochs < 0 or start_epoch < 0:
        raise ValueError("epochs and start_epoch must be >= 0")
    dev = resolve_device(device)
    model.to(dev)
    masks = MaskSet(model)
    example = _example_batch(test_loader, max(1, latency_batch))
    if follow_dependencies is None:
        follow_dependencies = _structured(schedule)
    after_prune = None
    if follow_dependencies:
        after_prune = functools.partial(_mask_dependents_on, model=model, example=example)
    opt = make_optimizer(model, optimizer, lr, momentum, weight_decay)
    notes = _check_epochs(schedule, epochs, start_epoch)
    if schedule.extensions:
        if arch is not None and dataset is not None:
            with torch.no_grad():
                model.eval()
                classes = int(model(example[:1].to(dev)).shape[-1])  # the job's class count
            notes += check_extensions(schedule, arch=arch, dataset=dataset, input_shape=tuple(example.shape[1:]),
                                      num_classes=classes)
        else:
            notes.append("the schedule's extensions name an arch and dataset, not checked: run_prune got no "
                         "arch=/dataset=")
    for note in notes:
        warnings.warn(note, stacklevel=2)
    compression = CompressionScheduler(model, schedule, masks, optimizer=opt, after_prune=after_prune,
                                       example_inputs=example)
    baseline = evaluate(model, test_loader, dev)
    history: list[PruneEpoch] = []
    compression.fast_forward(start_epoch)

    def record(m: EpochMetrics) -> None:
        e = start_epoch + m.epoch - 1
        compression.on_epoch_end(e, metrics={"min": m.loss if m.loss is not None else m.train_loss,
                                             "max": m.top1 if m.top1 is not None else 0.0})
        report = compression.thinned.get(e)
        item = PruneEpoch(e, m.lr, m.train_loss, m.top1, m.top5, m.loss, model_sparsity(model),
                          compression.pruned.get(e, {}), m.seconds, compression.regularization_loss.get(e),
                          dict(report.removed) if report is not None else None)
        history.append(item)
        if on_epoch is not None:
            on_epoch(item)

    if epochs == 0:
        compression.on_epoch_begin(start_epoch)
    else:
        train(model, train_loader, epochs=epochs, optimizer=opt, masks=masks, eval_loader=test_loader,
              on_epoch=record, on_epoch_start=lambda e: compression.on_epoch_begin(start_epoch + e - 1),
              loss_hook=compression.before_backward_pass, seed=seed, device=dev, progress=progress)
    final = evaluate(model, test_loader, dev)
    result = PruneResult(baseline, final, history, model_sparsity(model), sparsity_summary(model), masks,
                         warnings=notes, renames=list(compression.schedule.renames),
                         schedule_thinning=dict(compression.thinned))
    if thin:
        import copy

        cpu_model = copy.deepcopy(model).cpu()
        result.thinning = _thinning.thin(cpu_model, example, repeats=latency_repeats)
        result.thinned = evaluate(cpu_model, test_loader, "cpu")
        result.thinned_model = cpu_model
    return result


def _mask_dependents_on(masks: MaskSet, *, model: nn.Module, example: torch.Tensor) -> None:
    device = next(model.parameters()).device
    mask_dependents(model, masks, example.to(device))
