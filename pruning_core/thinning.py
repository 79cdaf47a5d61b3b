"""Physical thinning: remove pruned (all-zero) filters and channels with Torch-Pruning.

A masked model still spends the same MACs on its zeros; thinning makes the layers smaller. A
channel is removed only when removing it cannot change the outputs, judged over its whole
Torch-Pruning dependency group (a residual add couples the channels of several layers):

- every layer that *produces* the channel has zero parameters for it (conv/linear filter and bias,
  BatchNorm weight and bias), so the channel is identically zero; or
- every layer that *consumes* it has zero weights for it (conv/linear input channel), so nothing
  reads it.

Filter pruning leaves the following BatchNorm's bias alive (the channel becomes a constant, not
zero), so :func:`mask_dependents` extends filter masks to the BatchNorm that follows: the pruned
model then computes exactly what the thinned one will. :func:`thin` checks that the outputs agree.

Costs are counted by :mod:`pruning_core.measures` (MACs per sample of conv/linear weights, parameters), and
:class:`Footprints` forecasts by the same rules and the same counter what :func:`thin` would leave of a model
under other weights, without thinning it: a sensitivity point's ``macs`` and ``params_left``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .masks import MaskSet
from .measures import LAYERS, Removal, compare_latency, count, model_counts, positions, time_forward

__all__ = ["Footprint", "Footprints", "ModelCost", "ThinningReport", "compare_latency", "example_input",
           "mask_dependents", "measure", "measure_latency", "output_layers", "rebuild_thinned", "thin",
           "thinned_copy"]

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass
class ModelCost:
    """Size and speed of a model: parameters, MACs per sample (:mod:`pruning_core.measures`), median
    latency (ms) of one forward of the example batch on its device."""

    params: int
    macs: int
    latency_ms: float | None = None


@dataclass
class ThinningReport:
    """What thinning removed (channels per layer) and the cost before and after."""

    before: ModelCost
    after: ModelCost
    removed: dict[str, int] = field(default_factory=dict)  # module name -> output channels removed
    max_abs_diff: float = 0.0  # thinned vs masked outputs on the example input
    history: list = field(default_factory=list)  # Torch-Pruning pruning history, to rebuild the shapes

    @property
    def macs_ratio(self) -> float:
        return self.after.macs / self.before.macs if self.before.macs else 1.0

    @property
    def latency_ratio(self) -> float | None:
        if self.before.latency_ms and self.after.latency_ms:
            return self.after.latency_ms / self.before.latency_ms
        return None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(macs_ratio=self.macs_ratio, latency_ratio=self.latency_ratio)
        return out


def example_input(input_shape: Sequence[int], batch: int = 1, device: torch.device | str = "cpu") -> torch.Tensor:
    """A fixed random batch of ``input_shape`` (seeded: the same tensor every call)."""
    gen = torch.Generator().manual_seed(0)
    return torch.randn((batch, *input_shape), generator=gen).to(device)


def measure_latency(model: nn.Module, inputs: torch.Tensor, *, repeats: int = 30, warmup: int = 5) -> float:
    """Median time of one forward pass in ms, in eval and inference mode, on the inputs' device
    (:func:`pruning_core.measures.time_forward`, which warms up and synchronises CUDA)."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                model(inputs)
        return time_forward(model, inputs, repeats=repeats)
    finally:
        model.train(was_training)


def measure(model: nn.Module, inputs: torch.Tensor, *, latency: bool = True, repeats: int = 30) -> ModelCost:
    """Parameters and MACs per sample (:func:`pruning_core.measures.count`) and, if asked, the median latency."""
    macs, params = model_counts(model, inputs)
    lat = measure_latency(model, inputs, repeats=repeats) if latency else None
    return ModelCost(int(params), int(macs), lat)


def _graph(model: nn.Module, inputs: torch.Tensor) -> Any:
    import torch_pruning as tp

    was_training = model.training
    model.eval()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=inputs)
    model.train(was_training)
    return graph


def output_layers(model: nn.Module, inputs: torch.Tensor) -> list[nn.Module]:
    """Layers whose output channels are the model's outputs (their count must not change)."""
    last = [m for m in model.modules() if isinstance(m, LAYERS)]
    return last[-1:]


def _zero_rows(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Bool vector over ``dim``: True where every element of that slice is zero."""
    return (t.detach().transpose(0, dim).reshape(t.shape[dim], -1) == 0).all(dim=1)


def _fed_norms(graph: Any, module: nn.Module) -> list[nn.Module]:
    """The affine BatchNorms that ``module``'s output feeds directly (they carry its filters' channels)."""
    node = graph.module2node.get(module)
    return [out.module for out in (node.outputs if node is not None else [])
            if isinstance(out.module, _BN) and out.module.affine]


def mask_dependents(model: nn.Module, masks: MaskSet, inputs: torch.Tensor) -> int:
    """Extend filter masks to each layer's own bias and the BatchNorm fed directly by it.

    For every masked conv/linear weight with whole filters pruned, masks the same channels of its
    bias and of the next BatchNorm's weight and bias, so the channel is exactly zero (as it will be
    once thinned) instead of the BatchNorm's constant. Returns how many channels were extended.
    """
    graph = _graph(model, inputs)
    names = {m: n for n, m in model.named_modules()}
    extended = 0
    for name in masks.names():
        module_name, _, attr = name.rpartition(".")
        module = model.get_submodule(module_name) if module_name else model
        if attr != "weight" or not isinstance(module, LAYERS):
            continue
        dead = ~masks.get(name).reshape(masks.get(name).shape[0], -1).any(dim=1)
        if not dead.any():
            continue
        for target in [module, *_fed_norms(graph, module)]:
            for pname in ("bias",) if target is module else ("weight", "bias"):
                param = getattr(target, pname, None)
                if param is None:
                    continue
                full = f"{names[target]}.{pname}" if names[target] else pname
                keep = masks.get(full).clone() if full in masks else torch.ones_like(param, dtype=torch.bool)
                keep[dead.to(keep.device)] = False
                masks.set(full, keep)
                extended += int(dead.sum())
    return extended


def _removable(graph: Any, group: Any) -> list[int]:
    """Root indices of the group's channels that are dead in every producer or unread by every consumer."""
    producers, consumers = [], []
    for dep, idxs in group:
        module, fn = dep.target.module, dep.handler
        if not isinstance(module, nn.Module) or len(idxs) == 0:
            continue
        if isinstance(module, _BN):
            producers.append((module, idxs, "bn"))
        elif isinstance(module, LAYERS) and graph.is_out_channel_pruning_fn(fn):
            producers.append((module, idxs, "out"))
        elif isinstance(module, LAYERS) and graph.is_in_channel_pruning_fn(fn):
            consumers.append((module, idxs, "in"))
    roots = group[0].root_idxs if hasattr(group[0], "root_idxs") else group[0].idxs

    def dead_in(items: list) -> torch.Tensor:
        dead = torch.ones(len(roots), dtype=torch.bool)
        if not items:
            return torch.zeros(len(roots), dtype=torch.bool)
        for module, idxs, kind in items:
            idx = torch.as_tensor(list(idxs))
            if kind == "bn":
                zero = (module.weight.detach()[idx] == 0) & (module.bias.detach()[idx] == 0) if module.affine \
                    else torch.zeros(len(idx), dtype=torch.bool)
            elif kind == "out":
                zero = _zero_rows(module.weight, 0)[idx]
                if module.bias is not None:
                    zero &= module.bias.detach()[idx] == 0
            else:
                dim = 1 if not isinstance(module, nn.modules.conv._ConvTransposeNd) else 0
                zero = _zero_rows(module.weight, dim)[idx]
            if len(idx) != len(roots):  # index mapping (flatten/concat): be conservative
                return torch.zeros(len(roots), dtype=torch.bool)
            dead &= zero.cpu()
        return dead

    removable = dead_in(producers) | dead_in(consumers)
    return [r for r, ok in zip(roots, removable.tolist(), strict=True) if ok]


def _removals(graph: Any, groups: Sequence[Any]) -> Iterator[tuple[nn.Module, Any, list[int]]]:
    """(root layer, its pruning function, channel indices) of each group with channels to remove, judged when
    reached (a caller may prune a group before the next is judged). A layer keeps at least one channel."""
    for group in groups:
        idxs = _removable(graph, group)
        root = group[0].dep.target.module
        if len(idxs) >= graph.get_out_channels(root):
            idxs = idxs[1:]
        if idxs:
            yield root, group[0].dep.handler, idxs


def _groups(graph: Any, model: nn.Module, inputs: torch.Tensor, ignored_layers: Sequence[nn.Module] | None) -> list:
    ignored = list(output_layers(model, inputs) if ignored_layers is None else ignored_layers)
    return list(graph.get_all_groups(ignored_layers=ignored, root_module_types=LAYERS))


def thin(model: nn.Module, inputs: torch.Tensor, *, ignored_layers: Sequence[nn.Module] | None = None,
         latency: bool = True, repeats: int = 30) -> ThinningReport:
    """Remove dead channels from ``model`` in place; returns costs before/after and the output check.

    ``inputs`` is an example batch (its batch size is what latency is measured with). Output layers
    (the last conv/linear) keep their channels unless ``ignored_layers`` says otherwise.
    """
    import torch_pruning as tp  # noqa: F401  (imported for its side effect of failing early if absent)

    was_training = model.training
    model.eval()
    with torch.no_grad():
        reference = model(inputs).detach().clone()
    before = measure(model, inputs, latency=latency, repeats=repeats)
    graph = _graph(model, inputs)
    names = {m: n for n, m in model.named_modules()}
    removed: dict[str, int] = {}
    for root, handler, idxs in _removals(graph, _groups(graph, model, inputs, ignored_layers)):
        graph.get_pruning_group(root, handler, idxs=idxs).prune()
        removed[names.get(root, str(root))] = len(idxs)
    with torch.no_grad():
        diff = float((model(inputs) - reference).abs().max()) if removed else 0.0
    after = measure(model, inputs, latency=latency, repeats=repeats)
    model.train(was_training)
    history = [list(h) for h in graph.pruning_history()]
    return ThinningReport(before, after, removed, diff, history)


@dataclass
class Footprint:
    """What physical thinning would leave: MACs per sample and parameters (as :func:`thin`'s report counts
    them), and the channels it would remove per module."""

    macs: int
    params: int
    removed: dict[nn.Module, tuple[set[int], set[int]]] = field(default_factory=dict, repr=False)


class Footprints:
    """Forecasts of :func:`thin` on ``model`` under other weights (a sensitivity point's), without thinning.

    :func:`thin` physically removes a channel only when its whole dependency group lets it; a forecast
    judges the same groups by the same rules (:func:`_removals`) on the weights it is given, after extending
    zeroed filters to their bias and BatchNorm as :func:`mask_dependents` does before a prune job thins, and
    counts the result with :func:`pruning_core.measures.count`, which also counts :func:`thin`'s report.
    So a point's footprint is what thinning its mask leaves: a filter whose removal a residual add forbids
    removes nothing. The graph is built once; a forecast re-judges only the groups holding a changed tensor.
    """

    def __init__(self, model: nn.Module, inputs: torch.Tensor, *,
                 ignored_layers: Sequence[nn.Module] | None = None) -> None:
        self.model = model
        self.graph = _graph(model, inputs)
        self.positions = positions(model, inputs)
        self.groups = _groups(self.graph, model, inputs, ignored_layers)
        self.named = dict(model.named_parameters())
        self._param_of = {(m, pn): f"{mn}.{pn}" if mn else pn for mn, m in model.named_modules()
                          for pn, _ in m.named_parameters(recurse=False)}
        self._owner = {name: m for (m, _), name in self._param_of.items()}
        self._members = [{dep.target.module for dep, _ in g if isinstance(dep.target.module, nn.Module)}
                         for g in self.groups]
        self._base = [self._judge(g) for g in self.groups]
        self.dense = self._footprint(self._base)

    def _judge(self, group: Any) -> Removal:
        """The channels thinning removes in one group with the weights as they are now."""
        gone: dict[nn.Module, tuple[set[int], set[int]]] = {}
        for root, handler, idxs in _removals(self.graph, [group]):
            for dep, item_idxs in self.graph.get_pruning_group(root, handler, idxs=idxs):
                module = dep.target.module
                if not isinstance(module, nn.Module):
                    continue
                outs, ins = gone.setdefault(module, (set(), set()))
                inward = isinstance(module, LAYERS) and self.graph.is_in_channel_pruning_fn(dep.handler)
                (ins if inward else outs).update(int(i) for i in item_idxs)
        return gone

    def _footprint(self, parts: Sequence[Removal]) -> Footprint:
        removed: dict[nn.Module, tuple[set[int], set[int]]] = {}
        for part in parts:
            for module, (outs, ins) in part.items():
                have = removed.setdefault(module, (set(), set()))
                have[0].update(outs)
                have[1].update(ins)
        macs, params = count(self.model, self.positions, removed)
        return Footprint(macs, params, removed)

    def extended(self, values: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``values`` (parameter name -> tensor) plus the bias and fed BatchNorm channels of each conv/linear
        weight's all-zero filters, zeroed: what :func:`mask_dependents` makes of a filter mask."""
        out = dict(values)
        for name, value in values.items():
            module = self._owner.get(name)
            if not isinstance(module, LAYERS) or not name.endswith("weight") or value.dim() < 2:
                continue
            dead = ~(value != 0).flatten(1).any(1)
            if not dead.any():
                continue
            norms = _fed_norms(self.graph, module)
            targets = [(module, "bias"), *((bn, p) for bn in norms for p in ("weight", "bias"))]
            for target, pname in targets:
                full = self._param_of.get((target, pname))
                if full is None:
                    continue
                base = out.get(full, self.named[full].detach())
                out[full] = torch.where(dead.to(base.device), torch.zeros((), dtype=base.dtype, device=base.device),
                                        base)
        return out

    def forecast(self, values: Mapping[str, torch.Tensor]) -> Footprint:
        """The footprint thinning would leave with ``values`` (parameter name -> tensor) in the model."""
        values = self.extended(values)
        changed = {self._owner[n] for n in values}
        saved = {n: self.named[n].data for n in values}
        try:
            for n, v in values.items():
                self.named[n].data = v
            parts = [self._judge(g) if members & changed else base
                     for g, members, base in zip(self.groups, self._members, self._base, strict=True)]
        finally:
            for n, v in saved.items():
                self.named[n].data = v
        return self._footprint(parts)

    def removes_all(self, footprint: Footprint, name: str, weight: torch.Tensor, dim: int) -> bool:
        """Whether ``footprint`` removes every all-zero slice along ``dim`` (0 filters, 1 channels) of
        ``weight``, the value of parameter ``name`` it was forecast with."""
        module = self._owner[name]
        dead = set(torch.nonzero(~(weight != 0).transpose(0, dim).flatten(1).any(1)).flatten().tolist())
        if not dead:
            return True
        outs, ins = footprint.removed.get(module, (set(), set()))
        grouped = isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1
        gone = outs | ins if grouped else (outs if dim == 0 else ins)
        return dead <= gone


def rebuild_thinned(model: nn.Module, history: list, inputs: torch.Tensor) -> nn.Module:
    """Replay a thinning ``history`` on a fresh model of the same architecture, so a thinned
    checkpoint's state dict fits it (load the state dict afterwards)."""
    graph = _graph(model, inputs)
    graph.load_pruning_history([tuple(h) for h in history])
    return model


def thinned_copy(model: nn.Module, inputs: torch.Tensor, **kwargs: Any) -> tuple[nn.Module, ThinningReport]:
    """Thin a deep copy, leaving ``model`` as it is."""
    clone = copy.deepcopy(model)
    return clone, thin(clone, inputs, **kwargs)
