"""Sensitivity analysis: how accuracy falls as one tensor at a time is pruned.

Distiller's algorithm (prune one tensor of the trained model, evaluate once, restore) with its
faults fixed: every point starts from the trained weights whatever the level order, names match
exactly, nothing is skipped silently, and structured pruning can follow the dependency groups a
physical pruning would remove (``coupled=True``). Two engines give the same points:

- ``plain``: the reference: apply the mask, run the whole model over the data, restore.
- ``fast``: cut the traced model before the pruned tensor (``fastpath``) and run only the suffix
  once per level. The values live at the cut are cached per batch (within a memory budget) and
  *advanced* to the next parameter's cut, so the unchanged part of the model runs once per batch
  for the whole analysis, not once per parameter. Pruned weights are swapped in by reference
  (never copied into the trained tensors); levels whose mask prunes nothing reuse the unpruned
  evaluation; everything runs under ``torch.inference_mode``.

Level batching (``level_batch``; :mod:`pruning_core.level_batching`) runs several levels of one layer in
one vmapped forward of the suffix (the levels' weights stacked, split into groups that fit the memory), with
the same points; where vmap cannot run a suffix it loops, saying why. ``None`` turns it on for CUDA only,
where one wide forward replaces many small launches. On a CPU a larger batch is slower per sample (ResNet-20,
one thread: 512 samples took 1.25 s in batches of 256 against 0.83 s in batches of 64), and so is a batch
of levels: 9 levels of 3 layers over 256 samples took 1.35-1.42x the time of the per-level loop.

What a point measures is a task's metrics or the caller's own (``pruning_core.tasks``): ``task=`` picks
``classification`` (the default) or ``language-model``; ``metric=fn`` adds ``fn(outputs, batch)`` under
``metric_name`` (alone when no ``task`` is given). Batches are tuples ``(x, y, ...)`` or dicts (HF style);
``inputs(batch)`` says which of a batch's values the model takes (both engines follow it), while a
``forward(model, batch)`` hook runs the model any way it likes, on the plain engine only.

Points are yielded as soon as they are measured so a service can store each one as it arrives.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from pruning_core.adaptive import AdaptiveRule, BaseScores, PairedTally, shuffled_loader
from pruning_core.groups import SENSITIVITY, SENSITIVITY_GROUPS
from pruning_core.level_batching import LevelBatcher
from pruning_core.levels import parse_levels
from pruning_core.limits import SWEEP_MEMORY_MB
from pruning_core.points import COLUMN_METRICS, SensitivityPoint
from pruning_core.tasks import Evaluation, Measures, MetricFn, batch_inputs, batch_size, check_task, output_logits

log = logging.getLogger(__name__)

GROUPS = SENSITIVITY_GROUPS  # the sweep's names of pruning_core.groups' element, filters, channels
ENGINES = ("fast", "plain")
#: How the model's 4-D tensors are laid out while measured: ``auto`` (channels-last for a convolutional model that
#: runs in it: oneDNN and cuDNN favour it; on one CPU thread a ResNet-20 element sweep took 0.88x the time,
#: MobileNet-v2's forward 0.67x, ResNet-50's about the same, VGG-16-cifar's 1.2x, which ``contiguous`` avoids),
#: or either forced. Both engines run the same layout, so their points stay identical.
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")


@dataclass
class SkippedParam:
    """A requested parameter the analysis could not measure, and why."""

    parameter: str
    reason: str


@dataclass
class SensitivityResult:
    """All points of an analysis, the parameters skipped and how they were measured."""

    points: list[SensitivityPoint]
    skipped: list[SkippedParam]
    engine: str
    engine_note: str | None = None
    baseline: dict | None = None
    info: dict = field(default_factory=dict)


#: ``forward(model, batch) -> outputs``: how to run a model that takes a batch some other way.
ForwardFn = Callable[[nn.Module, Any], Any]
#: ``inputs(batch) -> tuple`` (positional) or a dict (keyword): the model's inputs in a batch.
InputsFn = Callable[[Any], Any]


def _to_device(obj: Any, device: torch.device, channels_last: bool) -> Any:
    """A batch (tensors in tuples, lists, dicts) on the device; 4-D float tensors channels-last if asked."""
    if isinstance(obj, torch.Tensor):
        t = obj.to(device, non_blocking=True)
        if channels_last and t.dim() == 4 and t.is_floating_point():
            t = t.contiguous(memory_format=torch.channels_last)
        return t
    if isinstance(obj, Mapping):
        return {k: _to_device(v, device, channels_last) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to_device(v, device, channels_last) for v in obj) if type(obj) in (tuple, list) \
            else type(obj)(*(_to_device(v, device, channels_last) for v in obj))  # a namedtuple
    return obj


def _nbytes(obj: Any) -> int:
    """Bytes of the tensors in a (nested) batch or tuple of values."""
    if isinstance(obj, torch.Tensor):
        return obj.nelement() * obj.element_size()
    if isinstance(obj, Mapping):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (tuple, list)):
        return sum(_nbytes(v) for v in obj)
    return 0


def _head(obj: Any, k: int, size: int) -> Any:
    """The first ``k`` samples of a batch of ``size``: every tensor whose first dimension is the batch, cut."""
    if isinstance(obj, torch.Tensor):
        return obj[:k] if obj.dim() and obj.shape[0] == size else obj
    if isinstance(obj, Mapping):
        return {key: _head(v, k, size) for key, v in obj.items()}
    if isinstance(obj, (tuple, list)) and type(obj) in (tuple, list):
        return type(obj)(_head(v, k, size) for v in obj)
    return obj


def _joined(parts: list[Any]) -> Any:
    """The outputs of a batch's chunks as the batch's output (tensors concatenated along the batch)."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    if first is None:
        return None
    if isinstance(first, torch.Tensor) and first.dim():
        return torch.cat(parts)
    if isinstance(first, Mapping):
        joined = {k: _joined([p[k] for p in parts]) for k in first}
        try:
            return type(first)(**joined)
        except TypeError:
            return joined
    if isinstance(first, (tuple, list)) and type(first) in (tuple, list):
        return type(first)(_joined(list(items)) for items in zip(*parts, strict=True))
    what = "0-d tensor" if isinstance(first, torch.Tensor) else type(first).__name__
    raise TypeError(f"cannot join the model's {what} outputs of a batch's chunks; use cpu_chunk=None")


class _Batches:
    """The evaluation data on the device, kept in memory after the first pass if it fits the budget.

    Image files (``pruning_core.image_cache``) travel as their uint8 pixels, normalised on the device into the
    very float batches their loader gives: held as those float batches when they fit the budget beside the
    pixels, else as the pixels (a quarter of the bytes) normalised each pass, else decoded again every pass
    (said once in the log). The first pass is shared with a pass given up after its first batch (the probe)."""

    def __init__(self, loader: DataLoader, device: torch.device, channels_last: bool, budget: int) -> None:
        from pruning_core.image_cache import HeldPass, log_decoded_over_budget, pixel_loader

        self.loader, self.device, self.channels_last, self.budget = loader, device, channels_last, budget
        self.cache: list[Any] | None = None  # the batches the model takes, once the whole set is held as those
        self.nbytes = 0
        twin = pixel_loader(loader)
        self.transform = twin[1] if twin is not None else None
        move = lambda raw: _to_device(raw, device, channels_last)  # noqa: E731 - uint8 pixels stay as they are
        self.held: HeldPass | None = HeldPass(twin[0] if twin is not None else loader, move, _nbytes, budget,
                                              log_decoded_over_budget if twin is not None else None)

    def _finish(self, batch: Any) -> Any:
        """A batch as the model takes it: image pixels ``[x, y, ...]`` normalised on the device."""
        if self.transform is None:
            return batch
        return [_to_device(self.transform(batch[0]), self.device, self.channels_last), *batch[1:]]

    def __iter__(self) -> Iterator[Any]:
        if self.cache is not None:
            yield from self.cache
            return
        assert self.held is not None
        floats: list | None = [] if self.transform is not None else None
        size = 0
        for raw in self.held:
            batch = self._finish(raw)
            if floats is not None:
                size += _nbytes(batch)
                if size + self.held.size <= self.budget:
                    floats.append(batch)
                else:
                    floats = None
            yield batch
        if self.held.complete and self.transform is None:
            self.cache, self.nbytes = self.held.held, self.held.size
        elif self.held.complete and floats is not None:
            self.cache, self.nbytes, self.held = floats, size, None


_NO_DEFAULT = object()


def _placeholder_binder(graph_nodes: Sequence[Any]) -> Callable[[tuple, dict], tuple]:
    """How a batch's (positional, keyword) inputs become the traced graph's placeholders, in order
    (``GraphSplitter.segment(0, cut)`` takes all of them): keywords by name, defaults where not given."""
    slots = [(str(n.target), n.args[0] if n.args else _NO_DEFAULT) for n in graph_nodes if n.op == "placeholder"]
    if any(name.startswith("*") for name, _ in slots):
        raise ValueError("the traced forward takes *args or **kwargs: the fast engine needs named inputs")

    def bind(args: tuple, kwargs: dict) -> tuple:
        if len(args) > len(slots):
            raise ValueError(f"the batch gives {len(args)} positional inputs; the traced forward takes {len(slots)}")
        given = {name for name, _ in slots[:len(args)]} & set(kwargs)
        if given:
            raise ValueError(f"input {sorted(given)[0]!r} is given both by position and by name")
        values, rest = list(args), dict(kwargs)
        for name, default in slots[len(args):]:
            if name in rest:
                values.append(rest.pop(name))
            elif default is not _NO_DEFAULT:
                values.append(default)
            else:
                raise ValueError(f"the batch gives no input {name!r} of the traced forward")
        if rest:
            raise ValueError(f"the traced forward takes no input {', '.join(map(repr, rest))}")
        return tuple(values)

    return bind


def _chunked(live: tuple, chunk: int | None) -> list[tuple]:
    """The model's inputs cut into ``chunk``-sample pieces (views) when every tensor among them is batched
    alike; else the inputs whole."""
    tensors = [t for t in live if isinstance(t, torch.Tensor)]
    if chunk is None or not tensors or any(t.dim() == 0 or t.shape[0] != tensors[0].shape[0] for t in tensors):
        return [live]
    size = tensors[0].shape[0]
    if size <= chunk:
        return [live]
    pieces = [v.split(chunk) if isinstance(v, torch.Tensor) else None for v in live]
    count = len(next(p for p in pieces if p is not None))
    return [tuple(v if p is None else p[i] for v, p in zip(live, pieces, strict=True)) for i in range(count)]


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _owners(model: nn.Module) -> dict[str, nn.Module]:
    """Parameter name -> the module that holds it."""
    return {f"{mn}.{pn}" if mn else pn: m for mn, m in model.named_modules()
            for pn, _ in m.named_parameters(recurse=False)}


Example = torch.Tensor | Callable[[], Any]  # an input tensor, or a call that runs the model on an example


def _runner(model: nn.Module, example: Example) -> Callable[[], Any]:
    return example if callable(example) else (lambda: model(example))


def _output_modules(model: nn.Module, example: Example) -> set[nn.Module]:
    """Modules whose output is the model's output (their filters are the classes).

    The probe runs in eval mode: a train-mode forward would move BatchNorm's running statistics.
    """
    produced: dict[int, nn.Module] = {}
    hooks = [m.register_forward_hook(lambda m, i, o: produced.__setitem__(id(o), m))
             for m in model.modules() if not list(m.children())]
    was_training = model.training
    model.eval()
    run = _runner(model, example)
    try:
        with torch.no_grad():
            out = run()
            out = out if isinstance(out, torch.Tensor) else _first_output(out)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return {produced[id(out)]} if id(out) in produced else set()


def _first_output(out: Any) -> Any:
    """The tensor an output's logits are (``tasks`` reads the same one), or the output itself."""
    try:
        return output_logits(out)
    except TypeError:
        return out


def _skip_reason(name: str, param: torch.Tensor, module: nn.Module, group: str, outputs: set) -> str | None:
    if param.dim() < 2:
        return f"{param.dim()}-D tensor (bias or normalisation parameter): nothing to rank per {group}"
    if group == "element":
        return None
    if not isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)) or not name.endswith(".weight"):
        return f"{group} pruning applies to conv and linear weights only ({type(module).__name__})"
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return "transposed convolution: its weight stores (in, out) channels; not supported"
    if group == "channel" and isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1:
        return "grouped/depthwise convolution: its input channels are tied to its filters"
    if group == "filter" and module in outputs:
        return "output layer: its filters are the model's classes"
    return None


def select_parameters(model: nn.Module, params: Sequence[str] | None, group: str,
                      example: Example | None = None) -> tuple[list[str], list[SkippedParam]]:
    """The parameters to analyse (exact names or globs, in model order) and those skipped, with why.

    ``None`` means every conv and linear weight. A pattern that matches nothing is an error: a typo
    must not turn into an analysis of nothing. ``example`` (an input, or a call running the model on one)
    finds the output layer, whose filters are not pruned.
    """
    from pruning_core.metrics import prunable_parameters

    if group not in GROUPS:
        raise ValueError(f"group {group!r}: choose one of {', '.join(GROUPS)}")
    named = dict(model.named_parameters())
    if params is None:
        wanted = [n for n, _ in prunable_parameters(model)]
    else:
        wanted = []
        for pattern in params:
            hits = [n for n in named if fnmatch.fnmatchcase(n, pattern)]
            if not hits:
                raise ValueError(f"--params {pattern!r} matches no parameter of the model")
            wanted += [n for n in hits if n not in wanted]
    owners = _owners(model)
    outputs = _output_modules(model, example) if example is not None and group == "filter" else set()
    chosen, skipped = [], []
    for name in wanted:
        reason = _skip_reason(name, named[name], owners[name], group, outputs)
        if reason:
            skipped.append(SkippedParam(name, reason))
        else:
            chosen.append(name)
    return chosen, skipped


class SensitivityAnalysis:
    """One sensitivity analysis: configured on construction, measured while iterated.

    ``skipped`` and ``engine`` are known after construction (more parameters may be skipped while
    iterating, e.g. when Torch-Pruning cannot group one); iterating yields ``SensitivityPoint`` s in
    parameter order, levels ascending. The model's weights are restored after every point.

    ``task`` (``classification`` unless ``metric`` is given alone, ``language-model``) and ``metric``
    (``fn(outputs, batch)``, stored as ``point.metrics[metric_name]``, or under its own keys when it returns a
    dict) say what a point measures (:mod:`pruning_core.tasks`). ``inputs(batch)`` gives the model's inputs
    (a tuple, or a dict of keywords; default: ``x`` of ``(x, y, ...)``, a dict batch's keys but ``labels``);
    ``forward(model, batch)`` runs the model itself, which the fast engine cannot follow (plain, with a note).
    """

    def __init__(self, model: nn.Module, loader: DataLoader, *, levels: str | Sequence[float],
                 params: Sequence[str] | None = None, group: str = "element",
                 device: str | torch.device | None = None, engine: str = "fast", coupled: bool = False,
                 samples: int | None = None, seed: int = 0, early_stop_top1: float | None = None,
                 amp: bool = False, memory_budget_mb: float = SWEEP_MEMORY_MB, latency: bool = False,
                 latency_batch: int = 8, latency_repeats: int = 20, cpu_chunk: int | None = 32,
                 task: str | None = None, metric: MetricFn | None = None, metric_name: str = "metric",
                 adaptive_tolerance: float | None = None, adaptive_confidence: float = 0.95,
                 forward: ForwardFn | None = None, inputs: InputsFn | None = None,
                 level_batch: bool | None = None, memory_format: str = "auto") -> None:
        if engine not in ENGINES:
            raise ValueError(f"engine {engine!r}: choose one of {', '.join(ENGINES)}")
        if coupled and group == "element":
            raise ValueError("coupled mode applies to structured groups (filter, channel), not element")
        if latency and group == "element":
            raise ValueError("latency needs a structured group (filter, channel): element pruning thins nothing")
        self.task = "classification" if task is None and metric is None else task
        if self.task is not None:
            check_task(self.task)
        if metric is not None and metric_name in COLUMN_METRICS:
            raise ValueError(f"metric_name {metric_name!r} is a built-in column ({', '.join(COLUMN_METRICS)}): "
                             "name the metric otherwise")
        if early_stop_top1 is not None and self.task != "classification":
            what = f"the {self.task} task" if self.task else "a metric without a task"
            raise ValueError(f"early_stop_top1 needs top1, which {what} does not measure")
        # adaptive evaluation (pruning_core.adaptive): opt-in, its early-stopped points are flagged approximate
        self.adaptive = None if adaptive_tolerance is None else AdaptiveRule(adaptive_tolerance, adaptive_confidence)
        if self.adaptive is not None and self.task != "classification":
            raise ValueError("adaptive evaluation bounds the top1 drop, which only the classification task measures")
        self._base_scores: BaseScores | None = None
        self.metric, self.metric_name = metric, metric_name
        self.forward, self.inputs = forward, inputs
        self.levels = sorted(parse_levels(levels))
        self.group, self.coupled, self.amp = group, coupled, amp
        self.mode = "coupled" if coupled else "independent"
        self.early_stop_top1 = early_stop_top1
        self.device = _resolve_device(device)
        if memory_format not in MEMORY_FORMATS:
            raise ValueError(f"memory_format {memory_format!r}: choose one of {', '.join(MEMORY_FORMATS)}")
        self._was_training = model.training
        self.model = model.to(self.device).eval()
        channels_last = self.device.type == "cuda" and memory_format != "contiguous"
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.budget = int(memory_budget_mb * 2**20)
        # On CPU both engines run the model in chunks of ``cpu_chunk`` samples: activations then stay in
        # cache (~25% faster on ResNet-20). Both chunk alike, as a sample's result may depend on the batch
        # it is computed in (oneDNN's convolutions on one thread do): the engines' points stay identical.
        self.chunk = cpu_chunk if self.device.type == "cpu" else None
        self.loader, self.subset = _subset_loader(loader, samples, seed)
        if self.adaptive is not None:
            self.loader = shuffled_loader(self.loader, seed)
        self.batches = _Batches(self.loader, self.device, channels_last, self.budget // 2)
        first = next(iter(self.batches))
        one = _head(first, 1, batch_size(first))
        self.memory_format = self._layout(memory_format, one)
        args, kwargs = self._model_inputs(first)
        # one input tensor (today's models): what Torch-Pruning (coupled groups, latency) is given
        single = args[0] if forward is None and len(args) == 1 and not kwargs and \
            isinstance(args[0], torch.Tensor) else None
        if (coupled or latency) and single is None:
            raise ValueError("coupled and latency trace the model with Torch-Pruning, which needs a model taking "
                             "one tensor (no forward hook, inputs or dict batches)")
        self.example = single[:1] if single is not None else None
        self.latency, self.latency_repeats = latency, latency_repeats
        self.latency_input = single[:latency_batch] if single is not None else None
        probe = lambda: self.outputs(one)  # noqa: E731 - the model on one sample, as the engines run it
        self.params, self.skipped = select_parameters(model, params, group, probe)
        self.named = dict(model.named_parameters())
        self.owners = _owners(model)
        self.footprints, self._footprint_cache = self._forecaster(model), {}
        self._groups = None
        if coupled:
            from pruning_core.coupled import CoupledGroups

            self._groups = CoupledGroups(model, self.example)
        self.engine, self.engine_note, self._splitter = engine, None, None
        self._bind: Callable[[tuple, dict], tuple] | None = None
        if engine == "fast":
            reason = self._fast_engine(model, args, kwargs)
            if reason is not None:
                self.engine, self._splitter = "plain", None
                self.engine_note = f"fast path unavailable, using plain: {reason}"
                log.warning(self.engine_note)
        self.baseline: dict | None = None
        self._chain: tuple[int, list] | None = None  # (cut, [(live values per chunk, batch)] per batch)
        # several levels per forward of the suffix: on by default on CUDA only (see the module docstring)
        self.level_batch = self.device.type == "cuda" if level_batch is None else level_batch
        self._batcher = LevelBatcher(self.device, self.budget) if self.level_batch and self._splitter else None

    def _layout(self, asked: str, one: Any) -> str:
        """The memory format the model runs in (:data:`MEMORY_FORMATS`): channels-last for a convolutional model
        unless ``contiguous`` is asked, kept only if a trial forward on one sample (``one``) runs (a ``view`` of a
        convolution's output fails in it: the model then stays contiguous, or ``channels_last`` asked is an
        error). A fixed rule, not a timing: every process measures in the same layout, so a sweep's points are
        the same to the last bit wherever its parameters are measured."""
        convolutional = any(p.dim() == 4 for p in self.model.parameters())
        if asked == "contiguous" or not convolutional:
            return "contiguous"
        if self.device.type != "cpu":  # converted with its batches already
            return "channels_last"
        self.model.to(memory_format=torch.channels_last)  # outside inference mode: the weights stay trainable
        try:
            with torch.inference_mode(), self._autocast():
                self.outputs(one)
        except RuntimeError as exc:  # e.g. "view size is not compatible with input tensor's size and stride"
            self.model.to(memory_format=torch.contiguous_format)
            if asked == "channels_last":
                raise ValueError(f"memory_format='channels_last': the model cannot run in it: {exc}") from exc
            log.info("the model runs contiguous: a trial forward in channels-last failed (%s)", exc)
            return "contiguous"
        return "channels_last"

    def restore(self) -> None:
        """Give the model back as it came: its training mode and, on a CPU, its contiguous layout."""
        self.model.train(self._was_training)
        if self.memory_format == "channels_last" and self.device.type == "cpu":
            self.model.to(memory_format=torch.contiguous_format)

    def _forecaster(self, model: nn.Module) -> Any:
        """What thinning would leave of each point (``thinning.Footprints``): structured groups only, and only
        where Torch-Pruning can trace the model (one input tensor); else points carry no footprint."""
        if self.group == "element":
            return None
        if self.example is None:
            log.warning("no footprints (macs, params_left): thinning traces the model with Torch-Pruning, which "
                        "needs a model taking one tensor")
            return None
        from pruning_core.thinning import Footprints

        try:
            return Footprints(model, self.example)
        except Exception as exc:  # noqa: BLE001 - Torch-Pruning's tracer raises anything on odd graphs
            log.warning("no footprints (macs, params_left): Torch-Pruning cannot trace the model: %s", exc)
            return None

    def _footprint(self, name: str, weights: dict[str, torch.Tensor]) -> tuple[int, int, bool]:
        """(MACs per sample, parameters, thinnable) of a point: what thinning its mask would leave, cached per
        (parameter, structures kept), which fixes the mask."""
        dim = 0 if SENSITIVITY[self.group] == "filters" else 1
        kept = int((weights[name] != 0).transpose(0, dim).flatten(1).any(1).sum())
        key = (name, kept)
        if key not in self._footprint_cache:
            fp = self.footprints.forecast(weights)
            thinnable = self.footprints.removes_all(fp, name, weights[name], dim)
            self._footprint_cache[key] = (fp.macs, fp.params, thinnable)
        return self._footprint_cache[key]

    def _fast_engine(self, model: nn.Module, args: tuple, kwargs: dict) -> str | None:
        """Trace the model for the fast engine; why it cannot run, or None when it can."""
        from pruning_core.fastpath import GraphSplitter, UntraceableModel

        if self.forward is not None:
            return ("a forward hook runs the model its own way, which the traced graph cannot follow; "
                    "give inputs(batch) instead when the model takes the batch's tensors as they are")
        try:
            self._splitter = GraphSplitter(model)
            self._bind = _placeholder_binder(self._splitter.nodes)
            self._bind(args, kwargs)
        except (UntraceableModel, ValueError) as exc:
            return str(exc)
        return None

    # -- running the model -----------------------------------------------------------------------
    def _model_inputs(self, batch: Any) -> tuple[tuple, dict]:
        """The model's (positional, keyword) inputs in a batch: from ``inputs`` if given, else the default."""
        if self.inputs is None:
            return batch_inputs(batch)
        got = self.inputs(batch)
        if isinstance(got, Mapping):
            return (), dict(got)
        return (tuple(got), {}) if isinstance(got, (tuple, list)) else ((got,), {})

    def outputs(self, batch: Any) -> Any:
        """The model's outputs on a batch, as the plain engine computes them: in the chunks the fast engine
        uses (a forward hook gets the whole batch)."""
        if self.forward is not None:
            return self.forward(self.model, batch)
        args, kwargs = self._model_inputs(batch)
        pieces = _chunked((*args, *kwargs.values()), self.chunk)
        if len(pieces) == 1:
            return self.model(*args, **kwargs)
        n, keys = len(args), list(kwargs)
        return _joined([self.model(*p[:n], **dict(zip(keys, p[n:], strict=True))) for p in pieces])

    def _evaluation(self) -> Evaluation:
        return Evaluation(self.task, self.metric, self.metric_name)

    @property
    def total_points(self) -> int:
        return len(self.params) * len(self.levels)

    # -- masks -----------------------------------------------------------------------------------
    def masks(self, name: str, level: float) -> dict[str, torch.Tensor]:
        """Keep-masks for one point: the tensor alone, or its whole dependency group when coupled."""
        from pruning_core import pruners

        weight = self.named[name].detach()
        if self.group == "element":
            return {name: pruners.level_mask(weight, level)}
        kind = SENSITIVITY[self.group]
        mask = pruners.structure_mask(weight, level, kind)
        if not self.coupled:
            return {name: mask}
        dim_first = mask if kind == "filters" else mask.transpose(0, 1)
        idxs = torch.nonzero(~dim_first.flatten(1).any(1)).flatten().tolist()
        masks = self._groups.masks(self.owners[name], kind == "filters", idxs)
        masks.setdefault(name, torch.ones_like(mask))
        masks[name] &= mask
        return masks

    # -- evaluation helpers ----------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        if not self.amp:
            return contextlib.nullcontext()
        dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _evaluate_model(self, tally: PairedTally | None = None) -> Measures:
        """The model over the data; a ``tally`` (adaptive) stops once it is decided. Adaptive and without one, this
        is the baseline: its per-sample scores are kept for the levels' paired intervals."""
        if tally is not None:
            with torch.inference_mode(), self._autocast():
                for batch in self.batches:
                    tally.add(self.outputs(batch), batch)
                    if tally.done:
                        break
            return tally.result()
        evaluation = self._evaluation()
        scores = BaseScores() if self.adaptive is not None else None
        with torch.inference_mode(), self._autocast():
            for batch in self.batches:
                out = self.outputs(batch)
                evaluation.add(out, batch)
                if scores is not None:
                    scores.add(out, batch)
        measures = evaluation.result()
        if scores is not None:
            scores.measures, self._base_scores = measures, scores
        return measures

    def _tally(self, evaluation: Evaluation | None = None) -> PairedTally | None:
        """A level's paired tally under the adaptive rule (None when the analysis is exact)."""
        if self.adaptive is None:
            return None
        assert self._base_scores is not None, "the baseline is measured first"
        return PairedTally(self.adaptive, self._base_scores, evaluation or self._evaluation())

    def pruned(self, masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """New tensors holding the trained values with the pruned entries zeroed (made once per point), in the
        trained tensors' layout (a contiguous weight in a channels-last model is reordered on every call)."""
        out = {}
        with torch.no_grad():
            for p, m in masks.items():
                out[p] = torch.empty_like(self.named[p])
                torch.where(m.to(out[p].device), self.named[p], out[p].new_zeros(()), out=out[p])
        return out

    def _latencies(self, weights_by_level: dict[float, dict[str, torch.Tensor]]) -> dict[float, float]:
        """Forward time (ms) on the analysis' device of the model physically thinned at each level (its filter
        masks extended to bias and BatchNorm, as the footprint assumes), the levels timed side by side
        (``measures.compare_latency``, synchronised) so that the differences between them are not noise."""
        from pruning_core.measures import compare_latency
        from pruning_core.thinning import thinned_copy

        thinned = {}
        for level, weights in weights_by_level.items():
            if self.footprints is not None:
                weights = self.footprints.extended(weights)
            with _swapped(self.named, weights):
                thinned[level] = thinned_copy(self.model, self.latency_input, latency=False)[0]
            if self.device.type == "cpu":  # timed in the layout the model is given back in, not the measuring one
                thinned[level] = thinned[level].to(memory_format=torch.contiguous_format)
        return compare_latency(thinned, self.latency_input, repeats=self.latency_repeats, device=self.device)

    def _point(self, name: str, level: float, weights: dict[str, torch.Tensor],
               measures: Measures | None, latency_ms: float | None = None) -> SensitivityPoint:
        """Build the point: nnz read with the pruned weights swapped in, the footprint forecast from them."""
        macs = params_left = thinnable = None
        with _swapped(self.named, weights):
            nnz = int(torch.count_nonzero(self.named[name]))
        if self.footprints is not None:
            macs, params_left, thinnable = self._footprint(name, weights)
        point = SensitivityPoint(parameter=name, sparsity=level, top1=None, top5=None, loss=None, samples=0,
                                 nnz=nnz, macs=macs, params_left=params_left, measured=measures is not None,
                                 approximate=self.amp, subset=self.subset, group=self.group, mode=self.mode,
                                 latency_ms=latency_ms)
        if measures is not None:
            measures.fill(point)
        if thinnable is not None:
            point.metrics = {**(point.metrics or {}), "thinnable": float(thinnable)}
        return point

    # -- iteration -------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[SensitivityPoint]:
        return self.measure(self.params)

    def measure(self, names: Iterable[str]) -> Iterator[SensitivityPoint]:
        """The points of ``names`` (of :attr:`params`, in model order, so the fast engine's chain only advances),
        after the unpruned evaluation (:attr:`baseline`). ``names`` is read as it goes: a worker of a parallel
        sweep claims its next parameter only when it is free (``pruning_core.parallel``)."""
        self.model.eval()
        try:
            base = self._evaluate_model()
            self.baseline = base.as_baseline()
            for name in names:
                yield from self._layer(name, base)
        finally:
            self._chain = None
            self.restore()

    def result(self, points: list[SensitivityPoint]) -> SensitivityResult:
        """The analysis' result holding ``points``: what was skipped, the engine, the baseline and how it ran."""
        return SensitivityResult(points, self.skipped, self.engine, self.engine_note, self.baseline,
                                 {"device": str(self.device), "group": self.group, "mode": self.mode,
                                  "levels": self.levels, "subset": self.subset, "task": self.task,
                                  "metric": self.metric_name if self.metric is not None else None,
                                  "level_batch": self._batcher is not None and self._batcher.ran,
                                  "memory_format": self.memory_format})

    def _layer(self, name: str, base: Measures) -> Iterator[SensitivityPoint]:
        """All levels of one parameter, ascending, stopping early below the floor if asked."""
        try:
            masks = {level: self.masks(name, level) for level in self.levels}
        except (ValueError, KeyError, RuntimeError) as exc:  # e.g. Torch-Pruning cannot group it
            self.skipped.append(SkippedParam(name, f"cannot build its pruning group: {exc}"))
            log.warning("skipping %s: %s", name, exc)
            return
        weights = {level: self.pruned(m) for level, m in masks.items()}
        cut = None
        if self.engine == "fast" and self._splitter is not None:
            try:
                cut = self._splitter.cut(sorted({p for m in masks.values() for p in m}))
            except KeyError as exc:
                log.warning("plain path for %s: %s", name, exc)
        # without an early stop all levels form one wave (one pass over the data); with it, one each
        levels = list(self.levels)
        waves = [levels] if self.early_stop_top1 is None else [[lv] for lv in levels]
        stopped = False
        for wave in waves:
            if stopped:
                for level in wave:
                    yield self._point(name, level, weights[level], None)
                continue
            # a level that prunes nothing is the unpruned evaluation: the fast engine (and adaptive) reuse it
            changed = {lv: weights[lv] for lv in wave if not all(bool(m.all()) for m in masks[lv].values())}
            if cut is None:  # the reference: every level evaluated in full
                tallies = {lv: self._plain(weights[lv]) for lv in wave if lv in changed or self.adaptive is None}
            else:
                tallies = self._fast(cut, changed) if changed else {}
            latencies = self._latencies({lv: weights[lv] for lv in wave}) if self.latency else {}
            for level in wave:
                point = self._point(name, level, weights[level], tallies.get(level, base), latencies.get(level))
                yield point
                if self.early_stop_top1 is not None and point.top1 < self.early_stop_top1:
                    stopped = True

    def evaluate(self, weights: dict[str, torch.Tensor] | None = None) -> Measures:
        """The model over the analysis' data, with ``weights`` (e.g. :meth:`pruned` masks of several layers) in
        place of the trained tensors for the while (a whole plan measured as a sweep measures a point)."""
        with _swapped(self.named, weights or {}):
            return self._evaluate_model()

    def _plain(self, weights: dict[str, torch.Tensor]) -> Measures:
        """Distiller's step: prune, evaluate the whole model, restore."""
        with _swapped(self.named, weights):
            return self._evaluate_model(self._tally())

    def _live_at(self, cut: int) -> Iterator[tuple[list[tuple], Any]]:
        """(values live at ``cut`` per chunk, the batch) per batch: advanced from the previous cut when
        cached, else computed from the data; cached for the next cut when they fit half the memory budget
        (counting the batches too when they are not kept in memory already)."""
        if self._chain is not None and self._chain[0] == cut:
            yield from self._chain[1]
            return
        if self._chain is not None and self._chain[0] < cut:
            step, source = self._splitter.segment(self._chain[0], cut), self._chain[1]
        else:
            step, source = self._splitter.segment(0, cut), self._chunks()
        self._chain = None  # an advanced cache replaces the old one: never hold both
        cache: list | None = []
        size = 0
        for lives, batch in source:
            out = [step(live) for live in lives]
            if cache is not None:
                size += _nbytes(out) + (_nbytes(batch) if self.batches.cache is None else 0)
                if size <= self.budget // 2:
                    cache.append((out, batch))
                else:
                    cache = None
            yield out, batch
        if cache is not None:
            self._chain = (cut, cache)

    def _chunks(self) -> Iterator[tuple[list[tuple], Any]]:
        """(the traced graph's inputs per chunk, the batch): each batch's model inputs in
        ``self.chunk``-sample pieces when set (views, no copies)."""
        assert self._bind is not None
        for batch in self.batches:
            yield _chunked(self._bind(*self._model_inputs(batch)), self.chunk), batch

    def _fast(self, cut: int, weights_by_level: dict[float, dict]) -> dict[float, Measures]:
        """One pass over the data: the live values at the cut once per batch, the suffix per level. A batch's
        chunks are joined again before they are scored, so every metric sees the batch the plain engine sees.
        Adaptive: a level's suffix stops running once its tally is decided; the prefix pass still runs to the end
        so that the values cached at the cut are complete for the next cut (``_live_at`` keeps only a full pass)."""
        suffix = self._splitter.segment(cut)
        evaluations = {lv: self._evaluation() for lv in weights_by_level}
        tallies = {lv: self._tally(e) for lv, e in evaluations.items()} if self.adaptive is not None else {}
        with torch.inference_mode(), self._autocast():
            for lives, batch in self._live_at(cut):
                active = {lv: w for lv, w in weights_by_level.items() if lv not in tallies or not tallies[lv].done}
                if not active:
                    continue
                for level, out in self._suffix_levels(suffix, lives, active).items():
                    (tallies[level] if tallies else evaluations[level]).add(out, batch)
        if tallies:
            return {lv: t.result() for lv, t in tallies.items()}
        return {lv: e.result() for lv, e in evaluations.items()}

    def _suffix_levels(self, suffix: Callable[[tuple], Any], lives: list[tuple],
                       weights_by_level: dict[float, dict]) -> dict[float, Any]:
        """The suffix's outputs on one batch (its chunks joined) for each level's pruned weights: in one
        batched forward per group of levels where level batching is on and can run the suffix, else per level."""
        if self._batcher is not None:
            batched = self._batcher.outputs(suffix, lives, weights_by_level)
            if batched is not None:
                return {level: _joined(parts) for level, parts in batched.items()}
        outputs = {}
        for level, weights in weights_by_level.items():
            with _swapped(self.named, weights):
                outputs[level] = _joined([suffix(live) for live in lives])
        return outputs


@contextlib.contextmanager
def _swapped(named: dict[str, nn.Parameter], values: dict[str, torch.Tensor]) -> Iterator[None]:
    """Let the parameters refer to ``values`` for a while: no copy in, none back, trained tensors untouched."""
    saved = {p: named[p].data for p in values}
    try:
        for p, v in values.items():
            named[p].data = v
        yield
    finally:
        for p, v in saved.items():
            named[p].data = v


def _subset_loader(loader: DataLoader, samples: int | None, seed: int) -> tuple[DataLoader, bool]:
    """A loader over a fixed, seeded random subset of ``samples`` items (the loader itself if None)."""
    if samples is None or samples >= len(loader.dataset):
        return loader, False
    if samples <= 0:
        raise ValueError("samples must be positive")
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(loader.dataset), generator=gen)[:samples].sort().values.tolist()
    sub = DataLoader(Subset(loader.dataset, idx), batch_size=loader.batch_size or 256, shuffle=False,
                     num_workers=loader.num_workers, collate_fn=loader.collate_fn)
    return sub, True


@contextlib.contextmanager
def point_progress(total: int, on_point: Callable[[SensitivityPoint], None] | None, progress: bool,
                   desc: str = "sensitivity") -> Iterator[Callable[[SensitivityPoint], None]]:
    """Where each measured point goes: the caller's ``on_point`` and, with ``progress``, a tqdm bar of
    ``total`` points (closed afterwards), for one process's sweep and a sharded one alike."""
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=desc, unit="point")

    def arrived(point: SensitivityPoint) -> None:
        if on_point is not None:
            on_point(point)
        if bar is not None:
            bar.set_postfix_str(f"{point.parameter} @ {point.sparsity:g}", refresh=False)
            bar.update(1)

    try:
        yield arrived
    finally:
        if bar is not None:
            bar.close()


def iter_sensitivity(model: nn.Module, loader: DataLoader, **kwargs) -> Iterator[SensitivityPoint]:
    """Yield sensitivity points as they are measured (keywords as ``SensitivityAnalysis``)."""
    return iter(SensitivityAnalysis(model, loader, **kwargs))


def analyze(model: nn.Module, loader: DataLoader, *, on_point: Callable[[SensitivityPoint], None] | None = None,
            progress: bool = False, metric: MetricFn | None = None, metric_name: str = "metric",
            task: str | None = None, forward: ForwardFn | None = None, **kwargs) -> SensitivityResult:
    """Run a whole analysis; ``on_point`` sees each point as it is measured, ``progress`` shows tqdm.

    ``metric``, ``metric_name``, ``task``, ``forward`` and the other keywords are ``SensitivityAnalysis``'."""
    kwargs.update(metric=metric, metric_name=metric_name, task=task, forward=forward)
    run = SensitivityAnalysis(model, loader, **kwargs)
    points = []
    with point_progress(run.total_points, on_point, progress) as arrived:
        for point in run:
            points.append(point)
            arrived(point)
    return run.result(points)
