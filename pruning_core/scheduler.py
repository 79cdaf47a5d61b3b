"""CompressionScheduler: runs a :class:`~pruning_core.schedule.Schedule` inside a training loop.

Like Distiller's, it is driven by epoch/minibatch callbacks, but it keeps no global state: the masks
live in a :class:`~pruning_core.masks.MaskSet` (attached to the optimizer, so pruned weights get no
gradient and stay exactly zero after each step) and the pruners, regularizers and thinning
extensions are built from the schedule's data. Epochs are 0-based, as in Distiller's YAML.

Per epoch: ``on_epoch_begin`` runs the pruners, then thinning extensions (Distiller thins at the
first minibatch of the epoch, after the pruners); per minibatch ``before_backward_pass`` adds the
active regularizers' penalty to the loss and ``on_minibatch_end`` (an optimizer step hook once
attached) zeroes the groups a thresholding regularizer drops; ``on_epoch_end`` keeps those
regularization masks on a ``keep_mask`` policy's last epoch and steps the lr policies.

Learning-rate policies step their scheduler once at the end of each active epoch (``step()``);
Distiller passed the absolute epoch (``step(epoch=e + 1)``), which torch has deprecated and which makes
an ExponentialLR that starts at epoch 40 jump to ``gamma**41`` at once. Here the decay counts from the
policy's first epoch. ``ReduceLROnPlateau`` steps with the validation loss (``metrics['min']``, or
``metrics['max']`` = top1 for ``mode: max``), as Distiller passes it.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .declarations import PRUNER_CLASSES, REGULARIZER_CLASSES, Declaration
from .lr_table import LR_SCHEDULERS
from .masks import ForwardMasks, MaskSet
from .schedule import PolicySpec, PrunerSpec, Schedule, lr_scheduler_class, model_parameter_names, resolve_schedule


def build_pruner(spec: PrunerSpec) -> Any:
    """Instantiate the pruner class a schedule entry names, with its arguments (its declaration's ``impl``)."""
    return PRUNER_CLASSES[spec.cls].build(spec.args)


def build_regularizer(spec: PrunerSpec) -> Any:
    """Instantiate the regularizer class a schedule entry names (its declaration's ``impl``)."""
    return REGULARIZER_CLASSES[spec.cls].build(spec.args)


def build_lr_scheduler(cls_name: str, args: dict[str, Any], optimizer: torch.optim.Optimizer) -> Any:
    """Instantiate an lr scheduler by name (torch's or Distiller's ``MultiStepMultiGammaLR``)."""
    cls = lr_scheduler_class(cls_name)
    if cls is None:
        raise ValueError(f"unknown lr scheduler class {cls_name!r}")
    return cls(optimizer, **args)


class CompressionScheduler:
    """Applies a schedule's pruning, regularization, thinning and lr policies as training progresses.

    Call order per epoch: ``on_epoch_begin(e)`` (pruners update masks, thinning extensions run), then
    per minibatch ``loss = before_backward_pass(loss)``, backward, the optimizer step (the attached
    MaskSet re-zeros pruned weights; ``on_minibatch_end`` runs as a step hook), then
    ``on_epoch_end(e, metrics)`` (lr policies step). ``after_prune(masks)`` runs whenever masks
    changed, e.g. to extend filter masks to the BatchNorm channels that follow them.
    ``example_inputs`` (one batch) is needed only by thinning extensions, to trace the model.
    Parameter names are resolved against ``model`` (DataParallel prefixes dropped): ``self.schedule``
    is the resolved copy and ``self.schedule.renames`` lists what changed.
    """

    def __init__(self, model: nn.Module, schedule: Schedule, masks: MaskSet | None = None, *,
                 optimizer: torch.optim.Optimizer | None = None,
                 after_prune: Callable[[MaskSet], None] | None = None,
                 example_inputs: torch.Tensor | None = None) -> None:
        schedule = resolve_schedule(schedule, model)  # unknown names fail here, located in the YAML
        self.model = model
        self.schedule = schedule
        self.masks = masks if masks is not None else MaskSet(model)
        self.after_prune = after_prune
        self.example_inputs = example_inputs
        self.pruners = {name: build_pruner(spec) for name, spec in schedule.pruners.items()}
        self.regularizers = {name: build_regularizer(spec) for name, spec in schedule.regularizers.items()}
        self.lr_schedulers: dict[str, Any] = {}
        self.optimizer: torch.optim.Optimizer | None = None
        self.epoch: int | None = None
        self.pruned: dict[int, dict[str, float]] = {}  # epoch -> parameter -> sparsity after pruning
        self.thinned: dict[int, Any] = {}  # epoch -> ThinningReport of the thinning done at its start
        self.regularization_loss: dict[int, float] = {}  # epoch -> mean penalty per minibatch
        self._reg_sum: dict[int, list[float]] = defaultdict(lambda: [0.0, 0])
        self._step_hook: Any = None
        self._step_pre_hook: Any = None
        # the pruning policies' own arguments (Distiller's pruner_args), each with its declared default
        self.settings = {id(p): self._declaration(p).policy_settings(p.args) for p in schedule.policies
                         if p.kind in ("pruner", "regularizer")}
        self.forward_masks = ForwardMasks(model)  # mask_on_forward_only policies' masks
        self._owner: dict[str, int] = {}  # parameter -> id of the policy whose mask it holds
        self._statistics: dict[str, Any] = {}  # pruner -> ActivationStatistics of its weights
        self._batchnorm: dict[str, dict[str, nn.Module]] = {}  # pruner -> conv weight -> its BatchNorm
        self.minibatch = 0  # training minibatches seen this run (Distiller's global minibatch id)
        self._epoch_batch = 0  # ... and in the current epoch
        self._forward_hook = model.register_forward_pre_hook(self._before_forward) if any(
            self._minibatch_work(p) for p in schedule.policies if p.kind == "pruner") else None
        for name, spec in schedule.pruners.items():  # collecting from the first training batch on
            if PRUNER_CLASSES[spec.cls].activation_statistic is not None:
                self._activation_statistics(name)
        if optimizer is not None:
            self.attach(optimizer)

    def _declaration(self, policy: PolicySpec) -> Declaration:
        if policy.kind == "pruner":
            return PRUNER_CLASSES[self.schedule.pruners[policy.instance_name].cls]
        return REGULARIZER_CLASSES[self.schedule.regularizers[policy.instance_name].cls]

    def _minibatch_work(self, policy: PolicySpec) -> bool:
        """Whether a pruning policy acts between epochs: on minibatches, or on the forward pass only."""
        settings = self.settings[id(policy)]
        return bool(settings["mini_batch_pruning_frequency"] or settings["mask_on_forward_only"]
                    or settings["discard_masks_at_minibatch_end"])

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Bind the lr schedulers to ``optimizer`` and run :meth:`on_minibatch_end` after each step
        (masks are attached by the training loop)."""
        self.optimizer = optimizer
        self.lr_schedulers = {name: build_lr_scheduler(s.cls, s.args, optimizer)
                              for name, s in self.schedule.lr_schedulers.items()}
        if self._step_hook is not None:
            self._step_hook.remove()
        if self._step_pre_hook is not None:
            self._step_pre_hook.remove()
        if self.regularizers or self._forward_hook is not None:
            self._step_hook = optimizer.register_step_post_hook(lambda *_: self.on_minibatch_end())
        if self._forward_hook is not None:  # the optimizer updates the dense copies (use_double_copies)
            self._step_pre_hook = optimizer.register_step_pre_hook(lambda *_: self.forward_masks.restore())

    def _active(self, kind: str, epoch: int) -> list[PolicySpec]:
        return [p for p in self.schedule.policies if p.kind == kind and epoch in p.active_epochs()]

    def target_sparsities(self, epoch: int) -> dict[str, float]:
        """Per pruner, the AGP level that ``on_epoch_begin(epoch)`` will use (AGP pruners only)."""
        out = {}
        for policy in self._active("pruner", epoch):
            spec = self.schedule.pruners[policy.instance_name]
            if PRUNER_CLASSES[spec.cls].agp:
                out[policy.instance_name] = self.pruners[policy.instance_name].target_sparsity(epoch, *policy.span())
        return out

    def on_epoch_begin(self, epoch: int) -> dict[str, float]:
        """Run the pruners, then the thinning extensions, scheduled for ``epoch``; returns the
        sparsity of each parameter pruned."""
        self.epoch = epoch
        self._epoch_batch = 0
        result: dict[str, float] = {}
        for policy in self._active("pruner", epoch):
            result.update(self._prune(policy, epoch))
            stats = self._statistics.get(policy.instance_name)
            if stats is not None:
                stats.reset()  # the next ranking sees this epoch's batches, as Distiller's per-epoch collector
        if result:
            if self.after_prune is not None:
                self.after_prune(self.masks)
            self.pruned[epoch] = result
        if self._active("extension", epoch):
            self.thin_now(epoch)
        return result

    def _prune(self, policy: PolicySpec, epoch: int) -> dict[str, float]:
        """One pruning policy's prune, with its policy arguments: forward-only masks (and their double copies
        and gradient masks) go to :attr:`forward_masks`, the others to the MaskSet; ``fold_batchnorm`` ranks
        BN-folded weights; activation-ranked pruners get their statistics first."""
        name = policy.instance_name
        pruner, decl = self.pruners[name], self._declaration(policy)
        settings = self.settings[id(policy)]
        if decl.epoch_aware:
            pruner.set_epoch(epoch, *policy.span())
        if decl.activation_statistic is not None:
            pruner.statistics = functools.partial(self._activation_statistics(name).scores,
                                                  statistic=decl.activation_statistic)
        view = self._folded_view(name) if settings["fold_batchnorm"] else None
        if not settings["mask_on_forward_only"]:
            pruned = pruner.prune(self.model, self.masks, view)
        else:
            self.forward_masks.restore()  # rank (and splice) on the dense weights
            options = (bool(settings["use_double_copies"]), bool(settings["mask_gradients"]))
            self.forward_masks.options.update(dict.fromkeys(pruner.targets(self.model), options))
            pruned = pruner.prune(self.model, self.forward_masks, view)
            for param, scale in getattr(pruner, "scales", {}).items():
                if param in pruned:
                    self.forward_masks.set_scale(param, scale)
        for param in pruned:
            self._owner[param] = id(policy)
        return pruned

    def _activation_statistics(self, pruner: str) -> Any:
        if pruner not in self._statistics:
            from .activation_stats import ActivationStatistics

            weights = self.pruners[pruner].targets(self.model)
            self._statistics[pruner] = ActivationStatistics(self.model, weights, self._example())
        return self._statistics[pruner]

    def _example(self) -> torch.Tensor | None:
        if self.example_inputs is None:
            return None
        return self.example_inputs.to(next(self.model.parameters()).device)

    def _folded_view(self, pruner: str) -> Callable[[str, torch.Tensor], torch.Tensor]:
        """What a ``fold_batchnorm`` policy ranks: each conv weight folded with the BatchNorm after it."""
        from .activation_stats import batchnorm_folded, conv_batchnorm_pairs

        if pruner not in self._batchnorm:
            example = self._example()
            if example is None:
                raise ValueError("fold_batchnorm finds the BatchNorm after each conv with one forward pass: pass "
                                 "example_inputs= to CompressionScheduler")
            targets = self.pruners[pruner].targets(self.model)
            self._batchnorm[pruner] = conv_batchnorm_pairs(self.model, example, targets)
        pairs = self._batchnorm[pruner]
        modules = dict(self.model.named_modules())

        def view(name: str, weight: torch.Tensor) -> torch.Tensor:
            bn = pairs.get(name)
            return weight if bn is None else batchnorm_folded(modules[name.rsplit(".", 1)[0]], bn)
        return view

    def _before_forward(self, module: nn.Module, inputs: Any) -> None:
        """Distiller's ``on_minibatch_begin`` for the policies that act between epochs (a forward pre-hook):
        every ``mini_batch_pruning_frequency`` training minibatches the pruner runs again (not on an epoch's
        first, which ``on_epoch_begin`` pruned); then the forward-only masks are applied."""
        if module.training and self.epoch is not None:
            due = []
            for policy in self._active("pruner", self.epoch):
                every = self.settings[id(policy)]["mini_batch_pruning_frequency"]
                if every and self._epoch_batch > 0 and self.minibatch % every == 0:
                    due.append(policy)
            permanent = False
            for policy in due:
                pruned = self._prune(policy, self.epoch)
                permanent = permanent or bool(pruned and not self.settings[id(policy)]["mask_on_forward_only"])
            if permanent and self.after_prune is not None:
                self.after_prune(self.masks)
            self.minibatch += 1
            self._epoch_batch += 1
        self.forward_masks.apply()

    def _discard(self, policy: PolicySpec) -> None:
        """Forget the masks ``policy`` set (its pruned weights may grow back): ``discard_masks_at_minibatch_end``,
        or a forward-only policy that ends without ``keep_mask``. Distiller discards every parameter's mask;
        only this policy's are."""
        for name in [n for n, owner in self._owner.items() if owner == id(policy)]:
            if name in self.forward_masks:
                self.forward_masks.remove(name)
            elif name in self.masks:
                self.masks.remove(name)
            del self._owner[name]

    def thin_now(self, epoch: int) -> Any:
        """Remove dead filters/channels physically (Torch-Pruning), then re-bind masks and optimizer to
        the new, smaller parameters (their optimizer state, e.g. momentum, starts afresh)."""
        from .thinning import thin

        if self.example_inputs is None:
            raise ValueError("thinning extensions need example inputs: pass example_inputs= to CompressionScheduler")
        device = next(self.model.parameters()).device
        example = self.example_inputs.to(device)
        self._mask_dead_filters(example)
        named = dict(self.model.named_parameters())
        shapes = {n: p.shape for n, p in named.items()}
        owner = {id(p): n for n, p in named.items()}
        report = thin(self.model, example, latency=False)
        after = dict(self.model.named_parameters())
        changed = {n for n, p in after.items() if p.shape != shapes[n]}
        for name in self.masks.names():
            if name in changed:
                self.masks.remove(name)
                self.masks.set(name, after[name].detach() != 0)
        if self.optimizer is not None:
            old_state = self.optimizer.state
            self.optimizer.state = defaultdict(dict)
            for group in self.optimizer.param_groups:
                group["params"] = [after[owner[id(p)]] for p in group["params"]]
            for param, state in old_state.items():
                name = owner.get(id(param))
                if name is not None and name not in changed:
                    self.optimizer.state[after[name]] = state
        self.thinned[epoch] = report
        return report

    def _mask_dead_filters(self, example: torch.Tensor) -> None:
        """Mask every all-zero filter (pruned, or zeroed by a regularizer) and the BatchNorm channels it
        feeds, as Distiller's remove_filters drops them together; thinning then removes them."""
        from .metrics import prunable_parameters
        from .thinning import mask_dependents

        for name, param in prunable_parameters(self.model):
            dead = (param.detach().reshape(param.shape[0], -1) == 0).all(dim=1)
            if dead.any():
                keep = self.masks.get(name).clone() if name in self.masks else torch.ones_like(param, dtype=torch.bool)
                keep[dead] = False
                self.masks.set(name, keep)
        mask_dependents(self.model, self.masks, example)

    def before_backward_pass(self, loss: torch.Tensor) -> torch.Tensor:
        """``loss`` plus the penalties of the regularizers active this epoch (Distiller's hook of that
        name); the penalty is also accumulated for :attr:`regularization_loss`."""
        if self.epoch is None:
            return loss
        policies = self._active("regularizer", self.epoch)
        if not policies:
            return loss
        penalty = sum(self.regularizers[p.instance_name].loss(self.model).to(loss.device) for p in policies)
        acc = self._reg_sum[self.epoch]
        acc[0] += float(penalty.detach())
        acc[1] += 1
        self.regularization_loss[self.epoch] = acc[0] / acc[1]
        return loss + penalty

    def on_minibatch_end(self) -> None:
        """Re-apply the masks; zero what thresholding regularizers drop (it may grow back later, as
        Distiller's temporary regularization masks, until a ``keep_mask`` policy keeps it)."""
        self.masks.apply()
        if self.epoch is None:
            return
        for policy in self._active("pruner", self.epoch):
            if self.settings[id(policy)]["discard_masks_at_minibatch_end"]:
                self._discard(policy)
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for policy in self._active("regularizer", self.epoch):
                for name, keep in self.regularizers[policy.instance_name].threshold(self.model).items():
                    params[name].masked_fill_(~keep, 0)

    def on_epoch_end(self, epoch: int | None = None, metrics: dict[str, float] | None = None) -> None:
        """Keep regularization masks on a ``keep_mask`` policy's last epoch; step the lr schedulers whose
        policies are active at ``epoch`` (default: the current one). ``metrics`` = ``{'min': val loss,
        'max': top1}`` feeds ReduceLROnPlateau; without it a plateau scheduler does not step."""
        epoch = self.epoch if epoch is None else epoch
        if epoch is None:
            return
        for policy in self._active("pruner", epoch):
            if epoch == policy.active_epochs()[-1]:
                self._end_pruning_policy(policy)
        for policy in self._active("regularizer", epoch):
            if self.settings[id(policy)]["keep_mask"] and epoch == policy.active_epochs()[-1]:
                changed = False
                for name, keep in self.regularizers[policy.instance_name].threshold(self.model).items():
                    old = self.masks.get(name) if name in self.masks else None
                    self.masks.set(name, keep if old is None else keep & old)
                    changed = True
                if changed and self.after_prune is not None:
                    self.after_prune(self.masks)
        if self._active("lr_scheduler", epoch) and self.optimizer is None:
            raise RuntimeError("lr policies need an optimizer: call attach(optimizer) first")
        for policy in self._active("lr_scheduler", epoch):
            scheduler = self.lr_schedulers[policy.instance_name]
            if LR_SCHEDULERS[self.schedule.lr_schedulers[policy.instance_name].cls].metric_driven:
                if metrics is not None and metrics.get(scheduler.mode) is not None:
                    scheduler.step(metrics[scheduler.mode])
            else:
                scheduler.step()

    def _end_pruning_policy(self, policy: PolicySpec) -> None:
        """A pruning policy's last epoch ended: with ``keep_mask`` its forward-only masks become permanent (the
        MaskSet keeps them zero from now on, as Distiller's ``mask_tensor``), without it they are dropped (the
        policy no longer masks the forward pass, so its weights are dense again)."""
        owned = [n for n, owner in self._owner.items() if owner == id(policy) and n in self.forward_masks]
        if not owned:
            return
        self.forward_masks.restore()
        if self.settings[id(policy)]["keep_mask"]:
            for name in owned:
                mask = self.forward_masks.get(name)
                self.forward_masks.remove(name)
                self.masks.set(name, mask)
                self._owner[name] = id(policy)
            if self.after_prune is not None:
                self.after_prune(self.masks)
        else:
            self._discard(policy)

    def step(self) -> None:
        """``on_epoch_end`` for the current epoch: lets ``training.train(scheduler=...)`` drive it."""
        self.on_epoch_end()

    def fast_forward(self, start_epoch: int) -> None:
        """Replay epochs ``0 .. start_epoch - 1`` without training: their pruning, thinning and lr steps
        (regularizers need training, so they do nothing here), to start a run inside the schedule."""
        for epoch in range(start_epoch):
            self.on_epoch_begin(epoch)
            self.on_epoch_end(epoch)

    def state_dict(self) -> dict[str, Any]:
        """Masks and lr scheduler states, for resuming."""
        return {"masks": self.masks.state_dict(),
                "lr_schedulers": {n: s.state_dict() for n, s in self.lr_schedulers.items()}}


def preview_schedule(schedule: Schedule, model: nn.Module, *, lr: float = 0.1,
                     epochs: int | None = None) -> list[dict[str, Any]]:
    """:func:`pruning_core.preview.preview` on ``model``: its parameter shapes, its prunable weights, and
    its current weights for the threshold pruners (Sensitivity, Magnitude, Splicing). The model is not
    changed. Used by ``prunescope prune --dry-run``; the API previews on stored shapes instead.
    """
    from .preview import preview

    _, prunable = model_parameter_names(model)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    with torch.no_grad():
        return preview(schedule, shapes, lr=lr, epochs=epochs, weights=model.get_parameter, prunable=prunable)
