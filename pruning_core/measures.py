"""The one MAC and parameter counter, and the one latency clock, of points, thinning reports and plans.

MACs are the multiply-accumulates of convolution and linear weights for one sample (``out x in/groups x
kernel`` per output position): the figure papers quote (ResNet-20 on CIFAR: 40.8M) and the only part
of a forward pass that thinning shrinks in proportion. Normalisation, activations and pooling are not
counted (Torch-Pruning's ``count_ops_and_params`` adds them, so its figures differ by a few percent).
Parameters are every parameter's elements.

:func:`count` reads a model's shapes, optionally minus the channels a thinning would remove
(:data:`Removal`): a physically thinned model and a forecast of the same thinning
(``pruning_core.thinning.Footprints``) are counted by the same code, so they agree by construction of
the shapes, not by two formulas kept in step.

:func:`time_forward` and :func:`compare_latency` time forward passes with ``torch.utils.benchmark`` on a
clock that synchronises the device first: CUDA runs kernels asynchronously, so an unsynchronised clock
times their launches, not their work.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

LAYERS = (nn.modules.conv._ConvNd, nn.Linear)

#: Channels a thinning removes, per module: (output channel indices, input channel indices). For a
#: module without an in/out distinction (BatchNorm, a depthwise conv) either set names its channels.
Removal = Mapping[nn.Module, tuple[set[int], set[int]]]


def positions(model: nn.Module, run: Callable[[], Any] | torch.Tensor) -> dict[nn.Module, int]:
    """Output positions per sample of each conv/linear (H*W of a 2-D conv, 1 of a linear, T of a linear
    over a sequence). ``run`` is one sample (a tensor is cut to its first) or a call running the model on
    one. Thinning changes channels, never positions, so this holds for the thinned model too."""
    found: dict[nn.Module, int] = {}

    def hook(m: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
        found[m] = out[0].numel() // m.weight.shape[0]

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, LAYERS)]
    was_training = model.training
    model.eval()
    call = run if callable(run) else (lambda: model(run[:1]))
    try:
        with torch.no_grad():
            call()
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return found


def _left(module: nn.Module, pname: str, param: torch.Tensor, gone: tuple[set[int], set[int]]) -> int:
    """Elements of ``param`` left once the ``gone`` (output, input) channels of ``module`` are removed."""
    out_gone, in_gone = gone
    shape = list(param.shape)
    if not shape or not (out_gone or in_gone):
        return param.numel()
    grouped = isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1
    if isinstance(module, LAYERS) and pname == "weight" and param.dim() >= 2 and not grouped:
        out_dim, in_dim = (1, 0) if isinstance(module, nn.modules.conv._ConvTransposeNd) else (0, 1)
        shape[out_dim] -= len(out_gone)
        shape[in_dim] -= len(in_gone)
    elif isinstance(module, LAYERS) and pname == "bias" and not grouped:
        shape[0] -= len(out_gone)
    else:  # normalisation channels, a depthwise conv's channels: one index set along dim 0
        shape[0] -= len(out_gone | in_gone)
    n = 1
    for s in shape:
        n *= max(s, 0)
    return n


def count(model: nn.Module, layer_positions: Mapping[nn.Module, int],
          removed: Removal | None = None) -> tuple[int, int]:
    """(MACs per sample, parameters) of ``model``, less the channels in ``removed``.

    ``layer_positions`` comes from :func:`positions` (a layer missing from it counts one position).
    """
    removed = removed or {}
    macs = params = 0
    none: tuple[set[int], set[int]] = (set(), set())
    for m in model.modules():
        gone = removed.get(m, none)
        for pname, p in m.named_parameters(recurse=False):
            left = _left(m, pname, p, gone)
            params += left
            if pname == "weight" and isinstance(m, LAYERS) and p.dim() >= 2:
                macs += left * layer_positions.get(m, 1)
    return macs, params


def model_counts(model: nn.Module, inputs: torch.Tensor) -> tuple[int, int]:
    """(MACs per sample, parameters) of ``model`` as it is, for an example batch ``inputs``."""
    return count(model, positions(model, inputs))


# -- latency --------------------------------------------------------------------------------------


def clock(device: torch.device | str) -> Callable[[], float]:
    """A clock for work on ``device`` (seconds): on CUDA it first waits for the device's queued kernels."""
    import timeit

    device = torch.device(device)
    if device.type != "cuda":
        return timeit.default_timer

    def synchronised() -> float:
        torch.cuda.synchronize(device)
        return timeit.default_timer()

    return synchronised


def _timer(model: Callable[..., Any], inputs: Any, device: torch.device | str) -> Any:
    from torch.utils import benchmark

    return benchmark.Timer(stmt="model(inputs)", globals={"model": model, "inputs": inputs},
                           timer=clock(device), num_threads=torch.get_num_threads())


def _device_of(inputs: Any, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return inputs.device if isinstance(inputs, torch.Tensor) else torch.device("cpu")


def time_forward(model: Callable[..., Any], inputs: Any, *, repeats: int = 30,
                 device: torch.device | str | None = None) -> float:
    """Median time (ms) of ``model(inputs)`` over ``repeats`` runs on ``device`` (default: the inputs'),
    under ``torch.utils.benchmark`` (which warms up first) with a synchronising :func:`clock`."""
    with torch.inference_mode():
        measurement = _timer(model, inputs, _device_of(inputs, device)).timeit(repeats)
    return measurement.median * 1000.0


def compare_latency(models: Mapping[Any, Callable[..., Any]], inputs: Any, *, repeats: int = 20,
                    warmup: int = 3, device: torch.device | str | None = None) -> dict[Any, float]:
    """Forward time (ms) of several models, timed in interleaved rounds and reduced to the minimum.

    Side by side, a drift in the machine's load touches every model alike, and the minimum drops the
    rounds another process interrupted: differences of a few percent become visible. Modules are timed in
    eval mode (restored after); each round is one ``torch.utils.benchmark`` measurement per model.
    """
    where = _device_of(inputs, device)
    states = {key: m.training for key, m in models.items() if isinstance(m, nn.Module)}
    times: dict[Any, list[float]] = {key: [] for key in models}
    try:
        with torch.inference_mode():
            timers = {}
            for key, m in models.items():
                if isinstance(m, nn.Module):
                    m.eval()
                for _ in range(warmup):
                    m(inputs)
                timers[key] = _timer(m, inputs, where)
            for _ in range(repeats):
                for key, timer in timers.items():
                    times[key].append(timer.timeit(1).median * 1000.0)
    finally:
        for key, state in states.items():
            models[key].train(state)
    return {key: min(values) for key, values in times.items()}
