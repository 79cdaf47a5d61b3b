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
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .masks import MaskSet

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)


@dataclass
class ModelCost:
    """Size and speed of a model for one input batch: parameters, MACs, median CPU latency (ms)."""

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
    """Median wall time of one forward pass in ms (inference mode, after ``warmup`` runs)."""
    was_training = model.training
    model.eval()
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            start = time.perf_counter()
            model(inputs)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000.0)
    model.train(was_training)
    return statistics.median(times)


def compare_latency(models: Mapping[Any, nn.Module], inputs: torch.Tensor, *, repeats: int = 20,
                    warmup: int = 3) -> dict[Any, float]:
    """Forward time (ms) of several models, timed in interleaved rounds and reduced to the minimum.

    Side by side, a drift in the machine's load touches every model alike, and the minimum drops the
    rounds another process interrupted: differences of a few percent become visible.
    """
    states = {key: m.training for key, m in models.items()}
    times: dict[Any, list[float]] = {key: [] for key in models}
    with torch.inference_mode():
        for m in models.values():
            m.eval()
            for _ in range(warmup):
                m(inputs)
        for _ in range(repeats):
            for key, m in models.items():
                start = time.perf_counter()
                m(inputs)
                times[key].append((time.perf_counter() - start) * 1000.0)
    for key, m in models.items():
        m.train(states[key])
    return {key: min(values) for key, values in times.items()}


def measure(model: nn.Module, inputs: torch.Tensor, *, latency: bool = True, repeats: int = 30) -> ModelCost:
    """Parameters and MACs (Torch-Pruning's counter) and, if asked, the median latency."""
    import torch_pruning as tp

    was_training = model.training
    model.eval()
    macs, params = tp.utils.count_ops_and_params(model, inputs)
    model.train(was_training)
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
    last = [m for m in model.modules() if isinstance(m, _LAYERS)]
    return last[-1:]


def _zero_rows(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Bool vector over ``dim``: True where every element of that slice is zero."""
    return (t.detach().transpose(0, dim).reshape(t.shape[dim], -1) == 0).all(dim=1)


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
        if attr != "weight" or not isinstance(module, _LAYERS):
            continue
        dead = ~masks.get(name).reshape(masks.get(name).shape[0], -1).any(dim=1)
        if not dead.any():
            continue
        targets: list[nn.Module] = [module]
        node = graph.module2node.get(module)
        for out in node.outputs if node is not None else []:
            if isinstance(out.module, _BN) and out.module.affine:
                targets.append(out.module)
        for target in targets:
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
        elif isinstance(module, _LAYERS) and graph.is_out_channel_pruning_fn(fn):
            producers.append((module, idxs, "out"))
        elif isinstance(module, _LAYERS) and graph.is_in_channel_pruning_fn(fn):
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
    ignored = list(output_layers(model, inputs) if ignored_layers is None else ignored_layers)
    names = {m: n for n, m in model.named_modules()}
    removed: dict[str, int] = {}
    for group in list(graph.get_all_groups(ignored_layers=ignored, root_module_types=_LAYERS)):
        idxs = _removable(graph, group)
        root = group[0].dep.target.module
        count = graph.get_out_channels(root)
        if not idxs:
            continue
        if len(idxs) >= count:  # a layer cannot lose every channel; keep one
            idxs = idxs[1:]
            if not idxs:
                continue
        graph.get_pruning_group(root, group[0].dep.handler, idxs=idxs).prune()
        removed[names.get(root, str(root))] = len(idxs)
    with torch.no_grad():
        diff = float((model(inputs) - reference).abs().max()) if removed else 0.0
    after = measure(model, inputs, latency=latency, repeats=repeats)
    model.train(was_training)
    history = [list(h) for h in graph.pruning_history()]
    return ThinningReport(before, after, removed, diff, history)


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
