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

Level batching (several levels in one forward of the suffix, stacked along the batch) is left out:
on a CPU a larger batch is slower per sample (ResNet-20, one thread: 512 samples took 1.25 s in
batches of 256 against 0.83 s in batches of 64), so stacking 9 levels of a 128 batch would lose.

Points are yielded as soon as they are measured so a service can store each one as it arrives.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from pruning_core.groups import SENSITIVITY, SENSITIVITY_GROUPS
from pruning_core.levels import parse_levels
from pruning_core.points import SensitivityPoint
from pruning_core.stats import wilson_interval

log = logging.getLogger(__name__)

GROUPS = SENSITIVITY_GROUPS  # the sweep's names of pruning_core.groups' element, filters, channels
ENGINES = ("fast", "plain")
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


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


class _Tally:
    """Accumulates top1/top5 hits and summed loss on the device (one sync at the end)."""

    def __init__(self) -> None:
        self.hits1: torch.Tensor | int = 0
        self.hits5: torch.Tensor | int = 0
        self.loss: torch.Tensor | float = 0.0
        self.n = 0

    def add(self, output: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> None:
        logits = (output if isinstance(output, torch.Tensor) else output[0]).float()
        k = min(5, logits.shape[1])
        hit = logits.topk(k, dim=1).indices == target[:, None]
        self.hits1 = self.hits1 + hit[:, 0].sum()
        self.hits5 = self.hits5 + hit.any(dim=1).sum()
        self.loss = self.loss + F.cross_entropy(logits, target, reduction="sum").double()
        self.n += target.shape[0]

    def result(self) -> tuple[int, int, float, int]:
        """(top1 hits, top5 hits, mean loss, samples)."""
        n = max(self.n, 1)
        return int(self.hits1), int(self.hits5), float(self.loss) / n, self.n


class _Batches:
    """The evaluation data on the device, kept in memory after the first pass if it fits the budget."""

    def __init__(self, loader: DataLoader, device: torch.device, channels_last: bool, budget: int) -> None:
        self.loader, self.device, self.channels_last, self.budget = loader, device, channels_last, budget
        self.cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.nbytes = 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.cache is not None:
            yield from self.cache
            return
        cache: list | None = []
        size = 0
        for batch in self.loader:
            x, y = batch[0], batch[1]
            x = x.to(self.device, non_blocking=True)
            if self.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            y = y.to(self.device, non_blocking=True)
            size += x.nelement() * x.element_size() + y.nelement() * y.element_size()
            if cache is not None and size <= self.budget:
                cache.append((x, y))
            else:
                cache = None
            yield x, y
        if cache is not None:
            self.cache, self.nbytes = cache, size


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _owners(model: nn.Module) -> dict[str, nn.Module]:
    """Parameter name -> the module that holds it."""
    return {f"{mn}.{pn}" if mn else pn: m for mn, m in model.named_modules()
            for pn, _ in m.named_parameters(recurse=False)}


def _output_modules(model: nn.Module, example: torch.Tensor) -> set[nn.Module]:
    """Modules whose output is the model's output (their filters are the classes).

    The probe runs in eval mode: a train-mode forward would move BatchNorm's running statistics.
    """
    produced: dict[int, nn.Module] = {}
    hooks = [m.register_forward_hook(lambda m, i, o: produced.__setitem__(id(o), m))
             for m in model.modules() if not list(m.children())]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(example)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return {produced[id(out)]} if id(out) in produced else set()


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
                      example: torch.Tensor | None = None) -> tuple[list[str], list[SkippedParam]]:
    """The parameters to analyse (exact names or globs, in model order) and those skipped, with why.

    ``None`` means every conv and linear weight. A pattern that matches nothing is an error: a typo
    must not turn into an analysis of nothing.
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


def _positions(model: nn.Module, example: torch.Tensor) -> dict[nn.Module, int]:
    """Output positions per sample of each conv/linear (H*W for a 2-D conv, 1 for a linear)."""
    found: dict[nn.Module, int] = {}

    def hook(m: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
        found[m] = out[0].numel() // m.weight.shape[0]

    layers = [m for m in model.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    hooks = [m.register_forward_hook(hook) for m in layers]
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        for h in hooks:
            h.remove()
    return found


def footprint(model: nn.Module, positions: dict[nn.Module, int]) -> tuple[int, int]:
    """(MACs per sample, parameters) once all-zero filters and channels are physically removed.

    Conv/linear weights keep only live filters x live input channels; biases and normalisation
    channels follow; anything else counts in full. This is what thinning would leave.
    """
    macs = params = 0
    for m in model.modules():
        own = dict(m.named_parameters(recurse=False))
        if not own:
            continue
        weight = own.get("weight")
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) and weight is not None and weight.dim() >= 2:
            nz = weight.detach() != 0
            rows = int(nz.flatten(1).any(1).sum())
            cols = int(nz.transpose(0, 1).flatten(1).any(1).sum())
            count = rows * cols * weight[0, 0].numel()
            params += count + (rows if own.get("bias") is not None else 0)
            macs += count * positions.get(m, 1)
        elif isinstance(m, _NORMS) and weight is not None and weight.dim() == 1:
            live = weight.detach() != 0
            if own.get("bias") is not None:
                live |= own["bias"].detach() != 0
            params += int(live.sum()) * len(own)
        else:
            params += sum(p.numel() for p in own.values())
    return macs, params


class SensitivityAnalysis:
    """One sensitivity analysis: configured on construction, measured while iterated.

    ``skipped`` and ``engine`` are known after construction (more parameters may be skipped while
    iterating, e.g. when Torch-Pruning cannot group one); iterating yields ``SensitivityPoint`` s in
    parameter order, levels ascending. The model's weights are restored after every point.
    """

    def __init__(self, model: nn.Module, loader: DataLoader, *, levels: str | Sequence[float],
                 params: Sequence[str] | None = None, group: str = "element",
                 device: str | torch.device | None = None, engine: str = "fast", coupled: bool = False,
                 samples: int | None = None, seed: int = 0, early_stop_top1: float | None = None,
                 amp: bool = False, memory_budget_mb: float = 1024, latency: bool = False,
                 latency_batch: int = 8, latency_repeats: int = 20, cpu_chunk: int | None = 32) -> None:
        if engine not in ENGINES:
            raise ValueError(f"engine {engine!r}: choose one of {', '.join(ENGINES)}")
        if coupled and group == "element":
            raise ValueError("coupled mode applies to structured groups (filter, channel), not element")
        if latency and group == "element":
            raise ValueError("latency needs a structured group (filter, channel): element pruning thins nothing")
        self.levels = sorted(parse_levels(levels))
        self.group, self.coupled, self.amp = group, coupled, amp
        self.mode = "coupled" if coupled else "independent"
        self.early_stop_top1 = early_stop_top1
        self.device = _resolve_device(device)
        self._was_training = model.training
        self.model = model.to(self.device).eval()
        channels_last = self.device.type == "cuda"
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.budget = int(memory_budget_mb * 2**20)
        # The fast path runs its suffixes on CPU in chunks of ``cpu_chunk`` samples: activations then
        # stay in cache (~25% faster on ResNet-20), and each sample's logits are bit-for-bit the same.
        self.chunk = cpu_chunk if self.device.type == "cpu" else None
        self.loader, self.subset = _subset_loader(loader, samples, seed)
        self.batches = _Batches(self.loader, self.device, channels_last, self.budget // 2)
        first = next(iter(self.batches))[0]
        self.example = first[:1]
        self.latency, self.latency_repeats = latency, latency_repeats
        self.latency_input = first[:latency_batch]
        self.params, self.skipped = select_parameters(model, params, group, self.example)
        self.named = dict(model.named_parameters())
        self.owners = _owners(model)
        self.positions = _positions(model, self.example) if group != "element" else {}
        self._groups = None
        if coupled:
            from pruning_core.coupled import CoupledGroups

            self._groups = CoupledGroups(model, self.example)
        self.engine, self.engine_note, self._splitter = engine, None, None
        if engine == "fast":
            from pruning_core.fastpath import GraphSplitter, UntraceableModel

            try:
                self._splitter = GraphSplitter(model)
            except UntraceableModel as exc:
                self.engine, self.engine_note = "plain", f"fast path unavailable, using plain: {exc}"
                log.warning(self.engine_note)
        self.baseline: dict | None = None
        self._chain: tuple[int, list] | None = None  # (cut, [(live values, targets)] per batch)

    @property
    def total_points(self) -> int:
        return len(self.params) * len(self.levels)

    # -- masks -----------------------------------------------------------------------------------
    def _masks(self, name: str, level: float) -> dict[str, torch.Tensor]:
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

    def _evaluate_model(self) -> _Tally:
        tally = _Tally()
        with torch.inference_mode(), self._autocast():
            for x, y in self.batches:
                tally.add(self.model(x), y)
        return tally

    def _pruned(self, masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """New tensors holding the trained values with the pruned entries zeroed (made once per point)."""
        with torch.no_grad():
            return {p: torch.where(m.to(self.named[p].device), self.named[p], 0.0) for p, m in masks.items()}

    def _latencies(self, weights_by_level: dict[float, dict[str, torch.Tensor]]) -> dict[float, float]:
        """Forward time (ms) of the model physically thinned at each level, the levels timed side by side
        (``thinning.compare_latency``) so that the differences between them are not the machine's noise."""
        from pruning_core.thinning import compare_latency, thinned_copy

        thinned = {}
        for level, weights in weights_by_level.items():
            with _swapped(self.named, weights):
                thinned[level] = thinned_copy(self.model, self.latency_input, latency=False)[0]
        return compare_latency(thinned, self.latency_input, repeats=self.latency_repeats)

    def _point(self, name: str, level: float, weights: dict[str, torch.Tensor],
               tally: _Tally | None, latency_ms: float | None = None) -> SensitivityPoint:
        """Build the point (nnz and footprint are read with the pruned weights swapped in)."""
        macs = params_left = None
        with _swapped(self.named, weights):
            nnz = int(torch.count_nonzero(self.named[name]))
            if self.group != "element":
                macs, params_left = footprint(self.model, self.positions)
        point = SensitivityPoint(parameter=name, sparsity=level, top1=None, top5=None, loss=None, samples=0,
                                 nnz=nnz, macs=macs, params_left=params_left, measured=tally is not None,
                                 approximate=self.amp, subset=self.subset, group=self.group, mode=self.mode,
                                 latency_ms=latency_ms)
        if tally is not None:
            hits1, hits5, loss, n = tally.result()
            point.top1, point.top5, point.loss, point.samples = 100.0 * hits1 / n, 100.0 * hits5 / n, loss, n
            point.top1_low, point.top1_high = wilson_interval(hits1, n)
            point.top5_low, point.top5_high = wilson_interval(hits5, n)
        return point

    # -- iteration -------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[SensitivityPoint]:
        self.model.eval()
        try:
            base = self._evaluate_model()
            hits1, hits5, loss, n = base.result()
            self.baseline = {"top1": 100.0 * hits1 / n, "top5": 100.0 * hits5 / n, "loss": loss, "samples": n}
            for name in self.params:
                yield from self._layer(name, base)
        finally:
            self._chain = None
            self.model.train(self._was_training)

    def _layer(self, name: str, base: _Tally) -> Iterator[SensitivityPoint]:
        """All levels of one parameter, ascending, stopping early below the floor if asked."""
        try:
            masks = {level: self._masks(name, level) for level in self.levels}
        except (ValueError, KeyError, RuntimeError) as exc:  # e.g. Torch-Pruning cannot group it
            self.skipped.append(SkippedParam(name, f"cannot build its pruning group: {exc}"))
            log.warning("skipping %s: %s", name, exc)
            return
        weights = {level: self._pruned(m) for level, m in masks.items()}
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
            if cut is None:  # the reference: every level evaluated in full
                tallies = {lv: self._plain(weights[lv]) for lv in wave}
            else:  # a level that prunes nothing is the unpruned evaluation: reuse it
                changed = {lv: weights[lv] for lv in wave if not all(bool(m.all()) for m in masks[lv].values())}
                tallies = self._fast(cut, changed) if changed else {}
            latencies = self._latencies({lv: weights[lv] for lv in wave}) if self.latency else {}
            for level in wave:
                point = self._point(name, level, weights[level], tallies.get(level, base), latencies.get(level))
                yield point
                if self.early_stop_top1 is not None and point.top1 < self.early_stop_top1:
                    stopped = True

    def _plain(self, weights: dict[str, torch.Tensor]) -> _Tally:
        """Distiller's step: prune, evaluate the whole model, restore."""
        with _swapped(self.named, weights):
            return self._evaluate_model()

    def _live_at(self, cut: int) -> Iterator[tuple[tuple, torch.Tensor]]:
        """(values live at ``cut``, targets) per batch: advanced from the previous cut when cached,
        else computed from the data; cached for the next cut when they fit half the memory budget."""
        if self._chain is not None and self._chain[0] == cut:
            yield from self._chain[1]
            return
        if self._chain is not None and self._chain[0] < cut:
            step, source = self._splitter.segment(self._chain[0], cut), self._chain[1]
        else:
            step, source = self._splitter.segment(0, cut), ((tuple([x]), y) for x, y in self._chunks())
        self._chain = None  # an advanced cache replaces the old one: never hold both
        cache: list | None = []
        size = 0
        for live, y in source:
            out = step(live)
            if cache is not None:
                size += sum(t.nelement() * t.element_size() for t in out if isinstance(t, torch.Tensor))
                if size <= self.budget // 2:
                    cache.append((out, y))
                else:
                    cache = None
            yield out, y
        if cache is not None:
            self._chain = (cut, cache)

    def _chunks(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The evaluation batches, cut into ``self.chunk``-sample pieces when set (views, no copies)."""
        for x, y in self.batches:
            if self.chunk is None or x.shape[0] <= self.chunk:
                yield x, y
            else:
                yield from zip(x.split(self.chunk), y.split(self.chunk), strict=True)

    def _fast(self, cut: int, weights_by_level: dict[float, dict]) -> dict[float, _Tally]:
        """One pass over the data: the live values at the cut once per batch, the suffix per level."""
        suffix = self._splitter.segment(cut)
        tallies = {lv: _Tally() for lv in weights_by_level}
        with torch.inference_mode(), self._autocast():
            for live, y in self._live_at(cut):
                for level, weights in weights_by_level.items():
                    with _swapped(self.named, weights):
                        tallies[level].add(suffix(live), y)
        return tallies


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


def iter_sensitivity(model: nn.Module, loader: DataLoader, **kwargs) -> Iterator[SensitivityPoint]:
    """Yield sensitivity points as they are measured (keywords as ``SensitivityAnalysis``)."""
    return iter(SensitivityAnalysis(model, loader, **kwargs))


def analyze(model: nn.Module, loader: DataLoader, *, on_point: Callable[[SensitivityPoint], None] | None = None,
            progress: bool = False, **kwargs) -> SensitivityResult:
    """Run a whole analysis; ``on_point`` sees each point as it is measured, ``progress`` shows tqdm."""
    run = SensitivityAnalysis(model, loader, **kwargs)
    points = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=run.total_points, desc="sensitivity", unit="point")
    try:
        for point in run:
            points.append(point)
            if on_point is not None:
                on_point(point)
            if bar is not None:
                bar.set_postfix_str(f"{point.parameter} @ {point.sparsity:g}", refresh=False)
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return SensitivityResult(points, run.skipped, run.engine, run.engine_note, run.baseline,
                             {"device": str(run.device), "group": run.group, "mode": run.mode,
                              "levels": run.levels, "subset": run.subset})
