"""Walk a schedule epoch by epoch without training and without torch: what the preview shows.

The one walker behind ``prunescope prune --dry-run``, the schedule-preview endpoint and
:func:`pruning_core.scheduler.preview_schedule`. It needs only the model's parameter names and shapes
(stored when a model is registered): pruner levels come from the declarations (AGP curve, fixed
levels), the lr from the torch-free steppers of :mod:`pruning_core.lr_table`. Threshold pruners
(Sensitivity, Magnitude, Splicing) prune by the weights' values, so their sparsity is None with a
note unless ``weights`` (parameter name -> tensor; the CLI has torch) is given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .declarations import PRUNER_CLASSES, Declaration
from .lr_table import LR_SCHEDULERS, LRArgumentError
from .schedule import PrunerSpec, Schedule, ScheduleError, resolve_names

Shapes = Mapping[str, Sequence[int]]  # parameter name -> shape, in model order
Weights = Callable[[str], Any]  # parameter name -> its tensor


def default_prunable(shapes: Shapes) -> list[str]:
    """The names globs match when only shapes are known: ``weight`` parameters with at least 2 dims, which
    for conv and linear layers equals :func:`pruning_core.metrics.prunable_parameters` (an embedding
    table would count too: pass ``prunable`` for models that have one)."""
    return [n for n, shape in shapes.items() if n.rsplit(".", 1)[-1] == "weight" and len(shape) >= 2]


def _lr_error(schedule: Schedule, name: str, exc: LRArgumentError) -> ScheduleError:
    return schedule.error(("lr_schedulers", name) + ((exc.key,) if exc.key else ()), str(exc))


def _threshold_note(pname: str, spec: PrunerSpec) -> str:
    return (f"{pname}: {spec.cls} prunes by the weights' magnitudes, so its sparsity is known only on the "
            "trained weights (shown as None; `prunescope prune --dry-run` computes it)")


def preview(schedule: Schedule, shapes: Shapes, *, lr: float = 0.1, epochs: int | None = None,
            weights: Weights | None = None, prunable: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One dict per epoch (0-based) of ``schedule`` on a model with these parameter ``shapes``:

    ``epoch``; ``lr`` (the lr that epoch trains with, from ``lr``); ``sparsity`` (each pruned parameter's
    target sparsity so far, model names); ``pruners`` (pruner acting this epoch -> its level, None when
    it differs per parameter or is a random draw); ``params`` (pruner -> the parameters it prunes);
    ``regularizers`` (active ones); ``thinning`` (extensions that thin at the start of the epoch); ``notes``.
    ``prunable`` are the names globs may match (default :func:`default_prunable`); ``epochs`` defaults to
    the schedule's last epoch + 1. Unknown parameter names raise a located ScheduleError.
    """
    chosen = list(prunable) if prunable is not None else default_prunable(shapes)
    resolved, targets = resolve_names(schedule, list(shapes), chosen)
    group: dict[str, Any] = {"lr": lr}
    steppers: dict[str, Any] = {}
    for name, spec in resolved.lr_schedulers.items():  # constructed in order, on one param group, as torch's
        try:
            steppers[name] = LR_SCHEDULERS[spec.cls].start(group, spec.args)
        except LRArgumentError as exc:
            raise _lr_error(resolved, name, exc) from None
    built: dict[str, Any] = {}

    def fixed_target(pname: str, decl: Declaration, spec: PrunerSpec, param: str, epoch: int,
                     span: tuple[int, int, int]) -> float | None:
        if decl.behaviour != "threshold":
            return decl.target(spec.args, param, 0, (0, 0, 1))
        if weights is None:
            return None
        if pname not in built:
            built[pname] = decl.build(spec.args)
        if decl.epoch_aware:  # a threshold that grows with the epochs (Splicing, BaiduRNNPruner)
            built[pname].set_epoch(epoch, *span)
        mask = built[pname].compute_mask(param, weights(param))
        return 1.0 - float(mask.float().mean())

    total = resolved.last_epoch() + 1 if epochs is None else epochs
    current: dict[str, float | None] = {}
    fixed: dict[tuple[str, str], float | None] = {}  # the weights do not change during a preview
    out = []
    for epoch in range(total):
        entry: dict[str, Any] = {"epoch": epoch, "lr": float(group["lr"]), "pruners": {}, "params": {},
                                 "regularizers": [], "thinning": [], "notes": []}
        for policy in resolved.policies:
            if epoch not in policy.active_epochs():
                continue
            pname = policy.instance_name
            if policy.kind == "pruner":
                spec = resolved.pruners[pname]
                decl = PRUNER_CLASSES[spec.cls]
                level = decl.target(spec.args, "", epoch, policy.span()) if decl.agp else None
                again = decl.epoch_aware and decl.behaviour == "threshold"
                for param in targets[pname]:
                    if level is None and ((pname, param) not in fixed or again):
                        fixed[pname, param] = fixed_target(pname, decl, spec, param, epoch, policy.span())
                    current[param] = level if level is not None else fixed[pname, param]
                entry["params"][pname] = list(targets[pname])
                entry["pruners"][pname] = level if level is not None else (
                    decl.shared_level(spec.args) if decl.shared_level is not None else None)
                if decl.behaviour == "threshold" and weights is None:
                    entry["notes"].append(_threshold_note(pname, spec))
            elif policy.kind == "regularizer":
                entry["regularizers"].append(pname)
            elif policy.kind == "extension":
                entry["thinning"].append(pname)
        entry["sparsity"] = dict(current)
        for policy in resolved.policies:
            if policy.kind == "lr_scheduler" and epoch in policy.active_epochs():
                name = policy.instance_name
                if LR_SCHEDULERS[resolved.lr_schedulers[name].cls].metric_driven:
                    entry["notes"].append(f"{name}: ReduceLROnPlateau follows the validation loss; "
                                          "the lr shown assumes no plateau")
                    continue
                try:
                    steppers[name].step()
                except LRArgumentError as exc:
                    raise _lr_error(resolved, name, exc) from None
        out.append(entry)
    return out
