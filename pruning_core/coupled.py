"""Coupled structured pruning as masks, following Torch-Pruning's dependency graph.

Removing a filter physically also removes its BatchNorm channel, the next layers' input channels
and, through a residual add, the same channel of every tensor added to it. Zeroing only the one
filter (Distiller) measures a pruning nobody can actually do. Here the whole dependency group is
zeroed instead (weights, biases, BN affine): the model keeps its shapes, so evaluation and the
fast path work unchanged, and the result is what physical pruning of the group would give.
"""

from __future__ import annotations

import torch
import torch_pruning as tp
from torch import nn

# Modules whose parameters are zeroed along dim 0 for both in- and out-channel dependencies.
_PER_CHANNEL = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.PReLU,
                nn.modules.instancenorm._InstanceNorm)


class CoupledGroups:
    """A Torch-Pruning dependency graph of a model, turned into per-tensor keep-masks."""

    def __init__(self, model: nn.Module, example_input: torch.Tensor) -> None:
        self.model = model
        self.graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input,
                                                           verbose=False)
        self._names = {id(p): n for n, p in model.named_parameters()}

    def masks(self, module: nn.Module, out_channels: bool, idxs: list[int]) -> dict[str, torch.Tensor]:
        """Keep-masks (True keeps) of every parameter touched when ``idxs`` of ``module`` are removed.

        ``out_channels`` selects filters (dim 0 of the weight) or input channels (dim 1).
        """
        masks: dict[str, torch.Tensor] = {}
        if not idxs:
            return masks
        if out_channels:
            fn = self.graph.get_pruner_of_module(module).prune_out_channels
        else:
            fn = self.graph.get_pruner_of_module(module).prune_in_channels
        group = self.graph.get_pruning_group(module, fn, list(idxs))
        for item in group.items:
            dep, index = item.dep, [int(i) for i in item.idxs]
            target = dep.target.module
            if not isinstance(target, nn.Module) or not index:
                continue
            outward = self.graph.is_out_channel_pruning_fn(dep.handler)
            self._zero(masks, target, outward, index)
        return masks

    def _zero(self, masks: dict[str, torch.Tensor], module: nn.Module, outward: bool, idxs: list[int]) -> None:
        """Mark the slices of ``module``'s parameters that the handler would remove."""
        if isinstance(module, nn.modules.conv._ConvTransposeNd):  # stores (in, out, ...): not handled
            raise ValueError("coupled groups through transposed convolutions are not supported")
        depthwise = isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1
        for pname, param in module.named_parameters(recurse=False):
            name = self._names.get(id(param))
            if name is None:
                continue
            mask = masks.setdefault(name, torch.ones_like(param, dtype=torch.bool))
            per_channel = isinstance(module, _PER_CHANNEL) or pname == "bias" or param.dim() == 1
            if per_channel:
                if outward or isinstance(module, _PER_CHANNEL) or depthwise:
                    mask[idxs] = False
            elif outward or depthwise:
                mask[idxs] = False  # filters; a depthwise conv's in and out channels are the same
            else:
                mask[:, idxs] = False
