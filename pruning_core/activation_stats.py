"""What forward passes reveal that weights do not: per-channel activation statistics and conv -> BatchNorm pairs.

Distiller's activation-ranked filter pruners (network trimming) rank a conv's filters by the channels of the
activation that follows it, collected over the training batches (its ``SummaryActivationStatsCollector``);
its ``fold_batchnorm`` policy argument ranks a conv's weights folded with the BatchNorm that follows it.
Both need the model's data flow, which forward hooks observe without tracing the code.

Statistics, per channel of an activation output ``(N, C, H, W)`` (or ``(N, C)``), as Distiller's
``activation_channels_apoz`` / ``activation_channels_means``:

- ``apoz``: the average percentage of zeros, ``100 * mean over samples of (zeros in the channel / H*W)``;
- ``mean``: the mean over samples of the channel's mean value.

They are averaged over samples (Distiller averages per-batch averages: the same for equal batches).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

STATISTICS = ("apoz", "mean")


def _module_of(name: str) -> str:
    return name[: -len(".weight")] if name.endswith(".weight") else name


def _tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    return None


def _run(model: nn.Module, example: torch.Tensor) -> None:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example.to(next(model.parameters()).device))
    finally:
        model.train(was_training)


def _follow(model: nn.Module, example: torch.Tensor, sources: dict[str, nn.Module],
            kinds: tuple[type, ...], through: tuple[type, ...] = ()) -> dict[str, str]:
    """For each source module (name -> module), the first module of ``kinds`` that consumes its output, possibly
    through modules of ``through`` (e.g. a BatchNorm between a conv and its ReLU), found by tensor identity
    on one forward pass of ``example``."""
    produced: dict[int, str] = {}  # id(output tensor) -> the source it carries
    found: dict[str, str] = {}
    handles: list[RemovableHandle] = []
    names = {id(m): n for n, m in model.named_modules()}
    by_module = {id(m): s for s, m in sources.items()}

    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        first, out = _tensor(inputs), _tensor(output)
        if id(module) in by_module and out is not None:
            produced[id(out)] = by_module[id(module)]
            return
        source = produced.get(id(first)) if first is not None else None
        if source is None or source in found:
            return
        if isinstance(module, kinds):
            found[source] = names[id(module)]
        elif isinstance(module, through) and out is not None:
            produced[id(out)] = source

    for module in model.modules():
        if id(module) in by_module or isinstance(module, kinds + through):
            handles.append(module.register_forward_hook(hook))
    try:
        _run(model, example)
    finally:
        for handle in handles:
            handle.remove()
    return found


def conv_batchnorm_pairs(model: nn.Module, example: torch.Tensor, weights: Sequence[str]) -> dict[str, nn.Module]:
    """For each conv weight name in ``weights``, the BatchNorm2d that consumes that conv's output directly
    (Distiller's SummaryGraph ``successors_f(conv, 'BatchNormalization')``); convs without one are left out."""
    modules = dict(model.named_modules())
    convs = {n: modules[_module_of(n)] for n in weights if isinstance(modules.get(_module_of(n)), nn.Conv2d)}
    found = _follow(model, example, convs, (nn.BatchNorm2d,))
    return {n: modules[found[n]] for n in convs if n in found}


def batchnorm_folded(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> torch.Tensor:
    """``conv.weight`` with ``bn`` folded in, as inference folds it: each filter times ``gamma / sqrt(running_var
    + eps)`` (gamma 1 without affine); the running statistics are used, as Distiller does."""
    if bn.running_var is None:
        raise ValueError("fold_batchnorm needs a BatchNorm with running statistics (track_running_stats)")
    gamma = bn.weight.detach() if bn.affine and bn.weight is not None else torch.ones_like(bn.running_var)
    scale = gamma / torch.sqrt(bn.running_var + bn.eps)
    return conv.weight.detach() * scale.view(-1, *([1] * (conv.weight.dim() - 1)))


def activation_modules(model: nn.Module, weights: Sequence[str], example: torch.Tensor | None) -> dict[str, str]:
    """Per conv weight, the module whose output is the activation its filters produce.

    Distiller's rule first (``layer1.0.conv1.weight`` -> module ``layer1.0.relu1``, its ``.conv`` -> ``.relu``),
    else the first ReLU module that consumes the conv's output, directly or through its BatchNorm (one forward
    pass of ``example``). ValueError naming the weights whose activation cannot be found."""
    modules = dict(model.named_modules())
    out: dict[str, str] = {}
    rest: dict[str, nn.Module] = {}
    for name in weights:
        *path, last = _module_of(name).split(".")
        by_name = ".".join([*path, "relu" + last[len("conv"):]]) if last.startswith("conv") else None
        if by_name is not None and isinstance(modules.get(by_name), nn.ReLU):
            out[name] = by_name
        elif _module_of(name) in modules:
            rest[name] = modules[_module_of(name)]
    if rest and example is not None:
        out.update(_follow(model, example, rest, (nn.ReLU,), (nn.BatchNorm2d, nn.BatchNorm1d)))
    missing = [n for n in weights if n not in out]
    if missing:
        raise ValueError(f"no ReLU module found after {', '.join(missing)}: activation ranking needs the "
                         "activation of each conv as a module (Distiller names it relu for conv: layer1.0.relu1 "
                         "after layer1.0.conv1, or a ReLU module fed by the conv or its BatchNorm)")
    return out


class ActivationStatistics:
    """Per-channel APoZ and mean of the activations after given convs, accumulated by forward hooks on the
    training batches (``model.training``) until :meth:`reset`."""

    def __init__(self, model: nn.Module, weights: Sequence[str], example: torch.Tensor | None = None) -> None:
        self.model = model
        self.example = example
        self.sources = activation_modules(model, weights, example)  # weight -> activation module
        self._sums: dict[str, dict[str, torch.Tensor]] = {}
        self._samples: dict[str, int] = {}
        self._force = False
        modules = dict(model.named_modules())
        self._handles = [modules[m].register_forward_hook(self._hook(m)) for m in dict.fromkeys(self.sources.values())]

    def _hook(self, module_name: str) -> Any:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            out = _tensor(output)
            if out is None or not (module.training or self._force) or out.dim() < 2:
                return
            with torch.no_grad():
                flat = out.detach().reshape(out.shape[0], out.shape[1], -1).float()
                zeros = (flat == 0).float().mean(dim=2).sum(dim=0)
                means = flat.mean(dim=2).sum(dim=0)
            sums = self._sums.setdefault(module_name, {"apoz": torch.zeros_like(zeros),
                                                       "mean": torch.zeros_like(means)})
            sums["apoz"] += zeros
            sums["mean"] += means
            self._samples[module_name] = self._samples.get(module_name, 0) + out.shape[0]
        return hook

    def samples(self, weight: str) -> int:
        """How many samples the statistics of ``weight``'s activation cover."""
        return self._samples.get(self.sources[weight], 0)

    def scores(self, weight: str, statistic: str) -> torch.Tensor:
        """The per-filter ``statistic`` (``apoz`` in percent, or ``mean``) of ``weight``'s activation.

        With no training batch seen since the last reset, one eval-mode forward of the example batch is
        measured first (the first prune of a run comes before any training)."""
        if statistic not in STATISTICS:
            raise ValueError(f"unknown activation statistic {statistic!r}; use one of {', '.join(STATISTICS)}")
        module = self.sources[weight]
        if not self._samples.get(module):
            self.measure_example()
        if not self._samples.get(module):
            raise ValueError(f"no activation statistics for {weight}: its activation {module} saw no batch")
        value = self._sums[module][statistic] / self._samples[module]
        return value * 100.0 if statistic == "apoz" else value

    def measure_example(self) -> None:
        """Accumulate the statistics of one forward pass of the example batch (eval mode, no gradient)."""
        if self.example is None:
            return
        self._force = True
        try:
            _run(self.model, self.example)
        finally:
            self._force = False

    def reset(self) -> None:
        """Forget what was accumulated (Distiller restarts its collector every training epoch)."""
        self._sums.clear()
        self._samples.clear()

    def remove(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
