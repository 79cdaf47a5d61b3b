"""One declaration per schedule class (issue 19): the implementations take exactly the declared arguments,
and the torch-free preview gives what the torch preview gave before it, field for field."""

from __future__ import annotations

import copy
import inspect
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from pruning_core import pruners as P
from pruning_core.agp import AutomatedGradualPruner
from pruning_core.declarations import PRUNER_CLASSES, REGULARIZER_CLASSES, Declaration
from pruning_core.models import create_model
from pruning_core.preview import preview
from pruning_core.schedule import (
    Schedule,
    ScheduleError,
    load_schedule,
    parse_schedule,
    resolve_schedule,
    resolve_weights,
)
from pruning_core.scheduler import build_lr_scheduler, build_pruner, preview_schedule

DISTILLER = Path("/work/shared/distiller-schedules")
if not DISTILLER.is_dir():
    DISTILLER = Path(__file__).resolve().parents[3] / "shared" / "distiller-schedules"


@pytest.mark.parametrize("declaration", [*PRUNER_CLASSES.values(), *REGULARIZER_CLASSES.values()],
                         ids=lambda d: d.name)
def test_implementation_takes_exactly_the_declared_arguments(declaration: Declaration) -> None:
    params = [p for n, p in inspect.signature(declaration.impl().__init__).parameters.items() if n != "self"]
    assert [p.name for p in params if p.default is p.empty] == list(declaration.required)
    assert {p.name: p.default for p in params if p.default is not p.empty} == dict(declaration.defaults)
    assert set(declaration.optional) == set(declaration.defaults)
    assert declaration.impl().__name__ == declaration.name


def _old_preview(schedule: Schedule, model: nn.Module, *, lr: float = 0.1,
                 epochs: int | None = None) -> list[dict[str, Any]]:
    """``preview_schedule`` as it was before issue 19 (torch schedulers, built pruners, isinstance checks),
    kept here as the reference the torch-free walker must equal."""
    resolved = resolve_schedule(schedule, model)
    weights = resolve_weights(resolved, model)
    pruners = {name: build_pruner(spec) for name, spec in resolved.pruners.items()}
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        schedulers = {n: build_lr_scheduler(s.cls, s.args, optimizer) for n, s in resolved.lr_schedulers.items()}

    def fixed_target(pruner: Any, name: str) -> float | None:
        if isinstance(pruner, P.RandomLevelStructureParameterPruner):
            return None
        if isinstance(pruner, (P.L1RankedStructureParameterPruner, P.SparsityLevelParameterPruner, P.RandomPruner)):
            return float(pruner._setting(name))
        if isinstance(pruner, P.NMStructuredPruner):
            n, m = pruner._setting(name)
            return 1.0 - n / m
        with torch.no_grad():
            mask = pruner.compute_mask(name, model.get_parameter(name))
        return 1.0 - float(mask.float().mean())

    def fixed_level(pruner: Any) -> float | None:
        levels = {v for v in pruner.rules.values() if isinstance(v, (int, float))}
        if isinstance(pruner, (P.L1RankedStructureParameterPruner, P.SparsityLevelParameterPruner,
                               P.RandomPruner)) and len(levels) == 1:
            return float(levels.pop())
        return None

    total = resolved.last_epoch() + 1 if epochs is None else epochs
    current: dict[str, float | None] = {}
    fixed: dict[tuple[str, str], float | None] = {}
    out = []
    for epoch in range(total):
        entry: dict[str, Any] = {"epoch": epoch, "lr": float(optimizer.param_groups[0]["lr"]), "pruners": {},
                                 "params": {}, "regularizers": [], "thinning": [], "notes": []}
        for policy in resolved.policies:
            if epoch not in policy.active_epochs():
                continue
            if policy.kind == "pruner":
                pruner = pruners[policy.instance_name]
                level = pruner.target_sparsity(epoch, *policy.span()) if isinstance(pruner, AutomatedGradualPruner) \
                    else None
                for name in weights[policy.instance_name]:
                    if level is None and (policy.instance_name, name) not in fixed:
                        fixed[policy.instance_name, name] = fixed_target(pruner, name)
                    current[name] = level if level is not None else fixed[policy.instance_name, name]
                entry["params"][policy.instance_name] = list(weights[policy.instance_name])
                entry["pruners"][policy.instance_name] = level if level is not None else (
                    None if isinstance(pruner, P.RandomLevelStructureParameterPruner) else fixed_level(pruner))
            elif policy.kind == "regularizer":
                entry["regularizers"].append(policy.instance_name)
            elif policy.kind == "extension":
                entry["thinning"].append(policy.instance_name)
        entry["sparsity"] = dict(current)
        for policy in resolved.policies:
            if policy.kind == "lr_scheduler" and epoch in policy.active_epochs():
                scheduler = schedulers[policy.instance_name]
                if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    entry["notes"].append(f"{policy.instance_name}: ReduceLROnPlateau follows the validation loss; "
                                          "the lr shown assumes no plateau")
                else:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        scheduler.step()
        out.append(entry)
    return out


EVERY_CLASS = """\
version: 1
pruners:
  agp: {class: AutomatedGradualPruner, initial_sparsity: 0.05, final_sparsity: 0.7, weights: ['conv*.weight']}
  agp_filters: {class: L1RankedStructureParameterPruner_AGP, initial_sparsity: 0.1, final_sparsity: 0.5,
                group_type: Filters, weights: [conv1.weight]}
  levels: {class: SparsityLevelParameterPruner, levels: {fc1.weight: 0.5, '*': 0.3}}
  same: {class: SparsityLevelParameterPruner, levels: {fc1.weight: 0.4}}
  magnitude: {class: MagnitudeParameterPruner, thresholds: {fc2.weight: 0.05}}
  sensitivity: {class: SensitivityPruner, sensitivities: {fc1.weight: 0.6, '*': 0.2}}
  ranked: {class: L1RankedStructureParameterPruner, group_type: Channels, desired_sparsity: 0.25,
           weights: [conv2.weight]}
  randlevel: {class: RandomLevelStructureParameterPruner, group_type: Filters, sparsity_range: [0.1, 0.3],
              weights: [conv2.weight]}
  splicing: {class: SplicingPruner, sensitivities: {fc2.weight: 0.3}, low_thresh_mult: 0.9, hi_thresh_mult: 1.1}
  nm: {class: NMStructuredPruner, n: 2, m: 4, weights: [fc1.weight]}
  random: {class: RandomPruner, level: 0.35, weights: [fc2.weight]}
lr_schedulers:
  warm: {class: LinearLR, total_iters: 3}
  decay: {class: StepLR, step_size: 2, gamma: 0.5}
  plateau: {class: ReduceLROnPlateau}
policies:
  - pruner: {instance_name: agp}
    starting_epoch: 0
    ending_epoch: 6
    frequency: 2
  - pruner: {instance_name: agp_filters}
    starting_epoch: 1
    ending_epoch: 4
  - {pruner: {instance_name: levels}, epochs: [0]}
  - {pruner: {instance_name: same}, epochs: [5]}
  - {pruner: {instance_name: magnitude}, epochs: [1, 3]}
  - {pruner: {instance_name: sensitivity}, epochs: [2]}
  - {pruner: {instance_name: ranked}, epochs: [4]}
  - {pruner: {instance_name: randlevel}, epochs: [5]}
  - {pruner: {instance_name: splicing}, epochs: [6]}
  - {pruner: {instance_name: nm}, epochs: [3]}
  - {pruner: {instance_name: random}, epochs: [2]}
  - {lr_scheduler: {instance_name: warm}, starting_epoch: 0, ending_epoch: 4}
  - {lr_scheduler: {instance_name: decay}, starting_epoch: 2, ending_epoch: 8}
  - {lr_scheduler: {instance_name: plateau}, epochs: [7]}
"""


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3)
        self.fc1, self.fc2 = nn.Linear(32, 16), nn.Linear(16, 4)


def test_every_pruner_class_previews_as_before() -> None:
    schedule = parse_schedule(EVERY_CLASS)
    # the classes issue 17 added never had the old preview: tests/core/test_distiller_pruners.py previews them
    added = {"ActivationAPoZRankedFilterPruner", "ActivationAPoZRankedFilterPruner_AGP", "BaiduRNNPruner",
             "ActivationMeanRankedFilterPruner", "ActivationMeanRankedFilterPruner_AGP", "BernoulliFilterPruner",
             "BernoulliFilterPruner_AGP"}
    assert {p.cls for p in schedule.pruners.values()} == set(PRUNER_CLASSES) - added
    model = _Net()
    for epochs in (None, 12):
        assert preview_schedule(schedule, model, lr=0.2, epochs=epochs) == _old_preview(schedule, model, lr=0.2,
                                                                                       epochs=epochs)


def test_threshold_pruners_without_weights_are_none_with_a_note() -> None:
    schedule = parse_schedule(EVERY_CLASS)
    model = _Net()
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    blind, seen = preview(schedule, shapes, lr=0.2), preview_schedule(schedule, model, lr=0.2)
    threshold = {"magnitude", "sensitivity", "splicing"}
    none_ok = {w for e in seen for p in {*threshold, "randlevel"} & set(e["params"]) for w in e["params"][p]}
    for a, b in zip(blind, seen, strict=True):
        assert a["lr"] == b["lr"] and a["pruners"] == b["pruners"] and a["params"] == b["params"]
        touched = {w for p in threshold & set(a["params"]) for w in a["params"][p]}
        assert all(a["sparsity"][w] is None and b["sparsity"][w] is not None for w in touched)
        assert {w for w, v in a["sparsity"].items() if v is None} <= none_ok  # threshold rules and random draws
        assert {w: v for w, v in a["sparsity"].items() if v is not None} == \
            {w: v for w, v in b["sparsity"].items() if a["sparsity"][w] is not None}
        notes = [n for n in a["notes"] if "magnitudes" in n]
        assert sorted(n.split(":")[0] for n in notes) == sorted(threshold & set(a["params"]))
    assert blind[2]["sparsity"]["fc1.weight"] is None and seen[2]["sparsity"]["fc1.weight"] > 0


ARCH = {"resnet20_filters.schedule_agp.yaml": "resnet20_cifar", "resnet56_cifar_filter_rank.yaml": "resnet56_cifar",
        "ssl_filter-removal_training.yaml": "resnet20_cifar", "resnet20_slimming.yaml": "resnet20_cifar",
        "resnet18.schedule_agp.yaml": "resnet18"}


@pytest.mark.skipif(not DISTILLER.is_dir(), reason=f"Distiller's schedules are not at {DISTILLER}")
@pytest.mark.parametrize("name", sorted(ARCH))
def test_distiller_schedules_preview_as_before(name: str) -> None:
    schedule = load_schedule(DISTILLER / name)
    model = create_model(ARCH[name])
    assert preview_schedule(schedule, model, lr=0.1) == _old_preview(schedule, model, lr=0.1)


@pytest.mark.parametrize(("edit", "key", "words"), [
    (("group_type: Channels", "group_type: Blocks"), "pruners.ranked.group_type", "block_shape"),
    (("hi_thresh_mult: 1.1", "hi_thresh_mult: 0.5"), "pruners.splicing.hi_thresh_mult", "low_thresh_mult (0.9)"),
    (("n: 2, m: 4", "n: 5, m: 4"), "pruners.nm.n", "at most m (4)"),
])
def test_relations_between_arguments_are_checked_by_the_parser(edit: tuple[str, str], key: str, words: str) -> None:
    with pytest.raises(ScheduleError) as err:
        parse_schedule(EVERY_CLASS.replace(*edit))
    assert err.value.key == key and words in err.value.reason
    with pytest.raises(ValueError):  # the implementation refuses the same arguments
        spec = copy.deepcopy(parse_schedule(EVERY_CLASS).pruners[key.split(".")[1]])
        spec.args.update({"group_type": "Blocks"} if "Blocks" in edit[1] else {})
        spec.args.update({"hi_thresh_mult": 0.5} if "0.5" in edit[1] else {})
        spec.args.update({"n": 5} if "n: 5" in edit[1] else {})
        build_pruner(spec)
