"""What an evaluation measures: a task's metrics, or the caller's own metric, accumulated on the device.

A *task* (``dataset_options.TASKS``) says what a model's outputs are scored by:

- ``classification``: top1 / top5 hits and mean cross-entropy of logits [B, C] against class ids [B];
- ``language-model``: logits [B, T, V] against next-token ids [B, T] (already shifted: ``y[t]`` is the
  token after ``x[t]``); ``loss`` is the mean cross-entropy over all tokens (targets of -100, the HF padding
  label, are left out), ``metrics["perplexity"]`` its exp; top1/top5 are not measured.

A *metric* is the caller's ``fn(outputs, batch)``: per-sample values (a 1-D tensor, averaged over all
samples) or a dict of sums (each divided by the sample count, or by the dict's ``"n"`` when it has one).

Batches are what a DataLoader yields: tuples/lists ``(x, y, ...)`` or dicts (HF style, the model's
keyword inputs plus ``"labels"``). Everything is summed on the device and read back with one sync.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from pruning_core.dataset_options import TASKS
from pruning_core.stats import wilson_interval

__all__ = ["TASKS", "Measures", "Evaluation", "MetricFn", "batch_inputs", "batch_targets", "batch_size",
           "output_logits", "task_metrics"]

#: ``fn(outputs, batch)`` -> per-sample values [N] or a dict of sums (optionally with the count ``"n"``).
MetricFn = Callable[[Any, Any], "torch.Tensor | Mapping[str, Any]"]
#: The label HF tokenizers give padding, left out of the language-model loss.
IGNORE_INDEX = -100
#: The metrics beyond top1/top5/loss each task puts in a point's ``metrics``.
_TASK_METRICS: dict[str, tuple[str, ...]] = {"classification": (), "language-model": ("perplexity",)}
assert set(_TASK_METRICS) == set(TASKS), "every task declares its metrics"


def task_metrics(task: str) -> tuple[str, ...]:
    """The names a task measures: its columns (top1/top5/loss) and its ``metrics`` keys."""
    check_task(task)
    return (("top1", "top5", "loss") if task == "classification" else ("loss",)) + _TASK_METRICS[task]


def check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task {task!r}: choose one of {', '.join(TASKS)}")


# -- batches ------------------------------------------------------------------------------------------

def batch_inputs(batch: Any) -> tuple[tuple, dict[str, Any]]:
    """The model's (positional, keyword) inputs in a batch: ``x`` of a tuple ``(x, y, ...)`` (each of
    ``x = (a, b)`` for a model of several inputs), every key but ``labels`` of a dict, a lone tensor itself."""
    if isinstance(batch, Mapping):
        return (), {k: v for k, v in batch.items() if k != "labels"}
    if isinstance(batch, (tuple, list)):
        x = batch[0]
        return (tuple(x), {}) if isinstance(x, (tuple, list)) else ((x,), {})
    return (batch,), {}


def batch_targets(batch: Any) -> torch.Tensor:
    """The targets of a batch: ``y`` of a tuple ``(x, y, ...)``, ``labels`` of a dict."""
    if isinstance(batch, Mapping):
        if "labels" not in batch:
            raise ValueError(f"a dict batch needs 'labels' for the task's metrics (it has {', '.join(batch)})")
        return batch["labels"]
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[1]
    raise ValueError("the task's metrics need targets: batches of (inputs, targets) or dicts with 'labels'")


def batch_size(batch: Any) -> int:
    """Samples in a batch: the first dimension of its first tensor."""
    found = _first_tensor(batch)
    if found is None:
        raise ValueError(f"cannot count the samples of a batch without tensors ({type(batch).__name__})")
    return int(found.shape[0]) if found.dim() else 1


def _first_tensor(obj: Any) -> torch.Tensor | None:
    if isinstance(obj, torch.Tensor):
        return obj
    items = obj.values() if isinstance(obj, Mapping) else obj if isinstance(obj, (tuple, list)) else ()
    for item in items:
        found = _first_tensor(item)
        if found is not None:
            return found
    return None


def output_logits(outputs: Any) -> torch.Tensor:
    """The logits of a model's outputs: a tensor, the first of a tuple, or ``logits`` of a dict (HF)."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, Mapping) and "logits" in outputs:
        return outputs["logits"]
    if isinstance(outputs, Sequence) and outputs and isinstance(outputs[0], torch.Tensor):
        return outputs[0]
    logits = getattr(outputs, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    raise TypeError(f"cannot find logits in the model's output ({type(outputs).__name__})")


Scalar = torch.Tensor | float


# -- what one evaluation measured ---------------------------------------------------------------------

@dataclass
class Measures:
    """What one evaluation measured: hit counts (classification), the mean loss, the sample count and the
    other metrics by name."""

    samples: int
    hits1: int | None = None
    hits5: int | None = None
    loss: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def top1(self) -> float | None:
        return None if self.hits1 is None else 100.0 * self.hits1 / max(self.samples, 1)

    @property
    def top5(self) -> float | None:
        return None if self.hits5 is None else 100.0 * self.hits5 / max(self.samples, 1)

    def fill(self, point: Any) -> None:
        """Write these measures into a ``SensitivityPoint`` (Wilson bounds only where top1/top5 exist)."""
        point.top1, point.top5, point.loss, point.samples = self.top1, self.top5, self.loss, self.samples
        point.metrics = dict(self.metrics) or None
        if self.hits1 is not None:
            point.top1_low, point.top1_high = wilson_interval(self.hits1, self.samples)
        if self.hits5 is not None:
            point.top5_low, point.top5_high = wilson_interval(self.hits5, self.samples)

    def as_baseline(self) -> dict[str, Any]:
        """The unpruned model's measures as a dict shaped like a point (``points.metric_value`` reads it)."""
        return {"top1": self.top1, "top5": self.top5, "loss": self.loss, "samples": self.samples,
                "metrics": dict(self.metrics) or None}


# -- accumulators -------------------------------------------------------------------------------------

def classification_hits(outputs: Any, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(float logits [B, C], class ids [B], top-k hits [B, k]): column 0 is the top1 hit, any() the top5 one.
    The one rule for both the summed measures and adaptive evaluation's per-sample scores."""
    logits, target = output_logits(outputs).float(), batch_targets(batch)
    return logits, target, logits.topk(min(5, logits.shape[1]), dim=1).indices == target[:, None]


class _Classification:
    """top1/top5 hits and summed cross-entropy of logits [B, C] against class ids [B]."""

    def __init__(self) -> None:
        self.hits1: Scalar = 0.0
        self.hits5: Scalar = 0.0
        self.loss: Scalar = 0.0
        self.n = 0

    def add(self, outputs: Any, batch: Any) -> None:
        logits, target, hit = classification_hits(outputs, batch)
        self.hits1 = self.hits1 + hit[:, 0].sum()
        self.hits5 = self.hits5 + hit.any(dim=1).sum()
        self.loss = self.loss + F.cross_entropy(logits, target, reduction="sum").double()
        self.n += target.shape[0]

    def scalars(self) -> list[Scalar]:
        return [self.hits1, self.hits5, self.loss]

    def measures(self, values: list[float], out: Measures) -> None:
        hits1, hits5, loss = values
        out.hits1, out.hits5, out.loss = int(hits1), int(hits5), loss / max(self.n, 1)


class _LanguageModel:
    """Summed token cross-entropy of logits [B, T, V] against next-token ids [B, T]."""

    def __init__(self) -> None:
        self.loss: Scalar = 0.0
        self.tokens: Scalar = 0.0
        self.n = 0

    def add(self, outputs: Any, batch: Any) -> None:
        logits, target = output_logits(outputs), batch_targets(batch)
        if logits.dim() != 3 or target.shape != logits.shape[:2]:
            raise ValueError(f"language-model task: logits [B, T, V] and targets [B, T] expected, got "
                             f"{tuple(logits.shape)} and {tuple(target.shape)}")
        self.loss = self.loss + F.cross_entropy(logits.flatten(0, 1).float(), target.flatten(),
                                                ignore_index=IGNORE_INDEX, reduction="sum").double()
        self.tokens = self.tokens + (target != IGNORE_INDEX).sum()
        self.n += target.shape[0]

    def scalars(self) -> list[Scalar]:
        return [self.loss, self.tokens]

    def measures(self, values: list[float], out: Measures) -> None:
        loss_sum, tokens = values
        out.loss = loss_sum / max(tokens, 1.0)
        out.metrics["perplexity"] = math.exp(out.loss) if out.loss < 700 else math.inf


class _Metric:
    """The caller's metric: per-sample values averaged over samples, or dict sums over the count."""

    def __init__(self, fn: MetricFn, name: str) -> None:
        self.fn, self.name = fn, name
        self.sums: dict[str, Scalar] | None = None
        self.count: Scalar = 0.0
        self.n = 0

    def add(self, outputs: Any, batch: Any) -> None:
        value = self.fn(outputs, batch)
        if isinstance(value, Mapping):
            sums = {k: v for k, v in value.items() if k != "n"}
            count = value["n"] if "n" in value else batch_size(batch)
            samples = batch_size(batch)
        elif isinstance(value, torch.Tensor) and value.dim() == 1:
            sums, count = {self.name: value.double().sum()}, value.shape[0]
            samples = value.shape[0]
        else:
            raise TypeError(f"metric {self.name!r} returned {type(value).__name__}"
                            f"{' of shape ' + str(tuple(value.shape)) if isinstance(value, torch.Tensor) else ''}: "
                            "return per-sample values (a 1-D tensor) or a dict of sums")
        if self.sums is None:
            self.sums = {k: 0.0 for k in sums}
        if set(sums) != set(self.sums):
            raise ValueError(f"metric {self.name!r} returned keys {sorted(sums)} after {sorted(self.sums)}: "
                             "every batch must give the same ones")
        for key, v in sums.items():
            if isinstance(v, torch.Tensor) and v.numel() != 1:
                raise ValueError(f"metric {self.name!r}: {key!r} must be a sum (one number), not a tensor of "
                                 f"shape {tuple(v.shape)}")
            self.sums[key] = self.sums[key] + (v.double().reshape(()) if isinstance(v, torch.Tensor) else float(v))
        self.count = self.count + (count.double() if isinstance(count, torch.Tensor) else float(count))
        self.n += samples

    def scalars(self) -> list[Scalar]:
        return [self.count, *(self.sums or {}).values()]

    def measures(self, values: list[float], out: Measures) -> None:
        count, *sums = values
        for key, total in zip(self.sums or {}, sums, strict=True):
            out.metrics[key] = total / count if count else math.nan


class Evaluation:
    """Accumulates one evaluation: the task's metrics and/or the caller's metric, on the device."""

    def __init__(self, task: str | None = "classification", metric: MetricFn | None = None,
                 metric_name: str = "metric") -> None:
        if task is None and metric is None:
            raise ValueError("an evaluation needs a task or a metric")
        if task is not None:
            check_task(task)
        self.parts: list[Any] = []
        if task == "classification":
            self.parts.append(_Classification())
        elif task == "language-model":
            self.parts.append(_LanguageModel())
        if metric is not None:
            self.parts.append(_Metric(metric, metric_name))

    def add(self, outputs: Any, batch: Any) -> None:
        for part in self.parts:
            part.add(outputs, batch)

    def result(self) -> Measures:
        """The measures, read from the device with one sync."""
        scalars = [s for part in self.parts for s in part.scalars()]
        tensors = [s for s in scalars if isinstance(s, torch.Tensor)]
        device = tensors[0].device if tensors else None
        read = iter(torch.stack([t.double().to(device) for t in tensors]).tolist() if tensors else [])
        values = [next(read) if isinstance(s, torch.Tensor) else float(s) for s in scalars]
        out = Measures(samples=self.parts[0].n)
        for part in self.parts:
            k = len(part.scalars())
            part.measures(values[:k], out)
            values = values[k:]
        return out
