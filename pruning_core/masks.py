"""Pruning masks that keep pruned weights at exactly zero while the model trains.

Unlike ``torch.nn.utils.prune`` there is no ``weight_orig`` copy and no reparametrisation: the
weight stays the same ``Parameter`` (optimizers hold references to it) and is zeroed in place.
Two hooks keep it zero during fine-tuning: a gradient hook masks the gradient (so pruned weights
get none), and an optimizer step post-hook re-zeros them (so momentum, weight decay or Adam state
accumulated before the mask was set cannot move them).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle


class _ParameterMasks:
    """Masks kept by parameter name for one model (what :class:`MaskSet` and :class:`ForwardMasks` share)."""

    def __init__(self, model: nn.Module) -> None:
        self._model = model
        self._masks: dict[str, torch.Tensor] = {}
        self._grad_hooks: dict[str, RemovableHandle] = {}

    @property
    def model(self) -> nn.Module:
        """The model whose parameters these masks belong to."""
        return self._model

    def _param(self, name: str) -> nn.Parameter:
        # Looked up each time: model.to()/load_state_dict may swap the Parameter object.
        try:
            return self._model.get_parameter(name)
        except AttributeError:
            raise KeyError(f"{name!r} is not a parameter of the model") from None

    def get(self, name: str) -> torch.Tensor:
        """The mask of ``name`` (KeyError if it has none)."""
        return self._masks[name]

    def remove(self, name: str) -> None:
        """Forget the mask of ``name``; its weights may grow back from zero when training."""
        del self._masks[name]
        handle = self._grad_hooks.pop(name, None)
        if handle is not None:
            handle.remove()

    def names(self) -> list[str]:
        """Names of the masked parameters, in the order they were set."""
        return list(self._masks)

    def __contains__(self, name: object) -> bool:
        return name in self._masks

    def __len__(self) -> int:
        return len(self._masks)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._masks))


class MaskSet(_ParameterMasks):
    """One boolean mask per pruned parameter of ``model`` (True = keep, False = pruned)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self._step_hooks: list[RemovableHandle] = []

    def _mask_on(self, name: str, device: torch.device) -> torch.Tensor:
        mask = self._masks[name]
        if mask.device != device:
            mask = self._masks[name] = mask.to(device)
        return mask

    def _check(self, name: str, mask: torch.Tensor) -> nn.Parameter:
        param = self._param(name)
        if mask.dtype != torch.bool:
            raise TypeError(f"mask for {name!r} must be a bool tensor (True = keep), got {mask.dtype}")
        if mask.shape != param.shape:
            raise ValueError(f"mask for {name!r} has shape {tuple(mask.shape)}, "
                             f"the parameter {tuple(param.shape)}")
        return param

    def set(self, name: str, mask: torch.Tensor) -> None:
        """Store ``mask`` for parameter ``name`` (replacing any earlier one) and zero the pruned
        weights at once, so mask and weights never disagree."""
        param = self._check(name, mask)
        self._masks[name] = mask.detach().to(param.device, copy=True)
        if self._step_hooks and name not in self._grad_hooks:
            self._hook_grad(name)
        self._apply_one(name)


    def _apply_one(self, name: str) -> None:
        param = self._param(name)
        with torch.no_grad():
            param.masked_fill_(self._mask_on(name, param.device).logical_not(), 0)

    def apply(self) -> None:
        """Zero every masked weight in place (same Parameter objects, no copies, no autograd)."""
        for name in self._masks:
            self._apply_one(name)

    def _hook_grad(self, name: str) -> None:
        def hook(grad: torch.Tensor) -> torch.Tensor:
            if name not in self._masks:
                return grad
            # masked_fill, not a multiply: a NaN/inf gradient must not leak into pruned weights.
            return grad.masked_fill(self._mask_on(name, grad.device).logical_not(), 0)

        self._grad_hooks[name] = self._param(name).register_hook(hook)

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Keep masked weights exactly zero while ``optimizer`` trains the model.

        Masks their gradients (a tensor hook per parameter, installed once) and re-zeros them after
        each ``optimizer.step()``. Several optimizers may be attached; ``detach`` removes all hooks.
        """

        def after_step(_opt: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
            self.apply()

        self._step_hooks.append(optimizer.register_step_post_hook(after_step))
        for name in self._masks:
            if name not in self._grad_hooks:
                self._hook_grad(name)
        self.apply()

    def detach(self) -> None:
        """Remove every hook installed by ``attach``; the masks and zeroed weights stay."""
        for handle in [*self._step_hooks, *self._grad_hooks.values()]:
            handle.remove()
        self._step_hooks.clear()
        self._grad_hooks.clear()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Copies of the masks, keyed by parameter name, for checkpoints."""
        return {name: mask.clone() for name, mask in self._masks.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Replace all masks with ``state`` (as from ``state_dict``) and zero the pruned weights.

        Every entry is checked first, so a bad checkpoint leaves the current masks untouched."""
        for name, mask in state.items():
            self._check(name, mask)
        for name in [n for n in self._masks if n not in state]:
            self.remove(name)
        for name, mask in state.items():
            self.set(name, mask)


class ForwardMasks(_ParameterMasks):
    """Masks applied before each forward pass only: Distiller's ``mask_on_forward_only`` (dynamic network
    surgery, Guo et al. 2016; DropFilter).

    Unlike :class:`MaskSet`, nothing re-zeros the weights after the optimizer step and their gradients are
    not masked (unless ``mask_gradients``), so a pruned weight keeps learning and a pruner may splice it
    back. With ``double_copies`` the dense weight is saved when the mask is applied and put back by
    :meth:`restore` (the scheduler calls it before each optimizer step): the forward pass sees the masked
    weight, the optimizer updates the dense one. ``scale`` multiplies the kept weights on the forward pass
    (DropFilter's compensation), only with double copies, where it never accumulates.
    It has MaskSet's ``model``/``set``/``get``/``names``/``remove``, so the pruners store into it unchanged.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self._double: set[str] = set()
        self._scales: dict[str, float] = {}
        self._dense: dict[str, torch.Tensor] = {}
        self.options: dict[str, tuple[bool, bool]] = {}  # name -> (double_copies, mask_gradients) for new masks

    def set(self, name: str, mask: torch.Tensor) -> None:
        """Store ``mask`` (True keeps) for ``name`` and apply it now; options from :attr:`options`."""
        param = self._param(name)
        if mask.dtype != torch.bool or mask.shape != param.shape:
            raise ValueError(f"mask for {name!r} must be a bool tensor of shape {tuple(param.shape)}")
        double, mask_gradients = self.options.get(name, (False, False))
        self._masks[name] = mask.detach().to(param.device, copy=True)
        (self._double.add if double else self._double.discard)(name)
        if mask_gradients and name not in self._grad_hooks:
            self._grad_hooks[name] = param.register_hook(self._grad_hook(name))
        elif not mask_gradients and name in self._grad_hooks:
            self._grad_hooks.pop(name).remove()
        self._apply_one(name)

    def _grad_hook(self, name: str) -> Any:
        def hook(grad: torch.Tensor) -> torch.Tensor:
            mask = self._masks.get(name)
            return grad if mask is None else grad.masked_fill(~mask.to(grad.device), 0)
        return hook

    def set_scale(self, name: str, scale: float) -> None:
        """Multiply ``name``'s kept weights by ``scale`` on the forward pass (double copies only)."""
        if name not in self._double:
            return
        self._scales[name] = float(scale)
        dense = self._dense.pop(name, None)
        if dense is not None:  # already applied without the scale: apply again from the dense copy
            with torch.no_grad():
                self._param(name).copy_(dense)
            self._apply_one(name)

    def remove(self, name: str) -> None:
        """Forget ``name``'s mask (its dense copy, if held, is put back first)."""
        dense = self._dense.pop(name, None)
        if dense is not None:
            with torch.no_grad():
                self._param(name).copy_(dense)
        super().remove(name)
        self._double.discard(name)
        self._scales.pop(name, None)

    def _apply_one(self, name: str) -> None:
        param = self._param(name)
        with torch.no_grad():
            if name in self._double and name not in self._dense:
                self._dense[name] = param.detach().clone()
            mask = self._masks[name].to(param.device)
            param.masked_fill_(~mask, 0)
            scale = self._scales.get(name)
            if scale is not None and name in self._double:
                param.mul_(scale)

    def apply(self) -> None:
        """Mask every weight for the coming forward pass (saving the dense copies not already held)."""
        for name in self._masks:
            if name not in self._dense:
                self._apply_one(name)

    def restore(self) -> None:
        """Put the held dense copies back (before the optimizer step, and before a pruner ranks them)."""
        with torch.no_grad():
            for name, dense in self._dense.items():
                self._param(name).copy_(dense)
        self._dense.clear()

    def detach(self) -> None:
        """Remove the gradient hooks (the masks stay)."""
        for handle in self._grad_hooks.values():
            handle.remove()
        self._grad_hooks.clear()
