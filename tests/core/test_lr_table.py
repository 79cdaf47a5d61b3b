"""The torch-free lr scheduler table (issue 19): equal to torch's signatures and to torch's lr, epoch by epoch."""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import pytest
import torch
import torch.optim.lr_scheduler as lrs

from pruning_core.lr_table import LR_SCHEDULERS, LR_UNSUPPORTED
from pruning_core.preview import preview
from pruning_core.schedule import ScheduleError, parse_schedule

_SKIPPED = ("self", "optimizer", "last_epoch", "verbose")


def _signature(cls: type) -> tuple[tuple[str, ...], dict[str, Any]]:
    params = [p for p in inspect.signature(cls.__init__).parameters.values()
              if p.name not in _SKIPPED and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return (tuple(p.name for p in params if p.default is p.empty),
            {p.name: p.default for p in params if p.default is not p.empty})


@pytest.mark.parametrize("name", sorted(LR_SCHEDULERS))
def test_table_equals_the_installed_signature(name: str) -> None:
    declaration = LR_SCHEDULERS[name]
    required, optional = _signature(declaration.impl())
    assert declaration.required == required
    assert dict(declaration.optional) == optional
    assert list(declaration.optional) == list(optional)  # the order too (torch allows positional use)


def test_table_holds_every_torch_scheduler_a_yaml_can_configure() -> None:
    base = getattr(lrs, "LRScheduler", None) or lrs._LRScheduler
    torch_classes = {n for n, c in vars(lrs).items() if inspect.isclass(c) and not n.startswith("_")
                     and (issubclass(c, base) or c is lrs.ReduceLROnPlateau) and n not in LR_UNSUPPORTED}
    ours = {n for n, d in LR_SCHEDULERS.items() if d.impl_path.startswith("pruning_core.")}
    assert set(LR_SCHEDULERS) - ours == torch_classes  # a new torch class must be declared (or refused)


#: (class, arguments) cases; each class has several, and chains of two share one optimizer.
CASES: list[list[tuple[str, dict[str, Any]]]] = [
    [("StepLR", {"step_size": 3})], [("StepLR", {"step_size": 1, "gamma": 0.5})],
    [("StepLR", {"step_size": 7, "gamma": 0.93})],
    [("MultiStepLR", {"milestones": [2, 5, 5, 11]})], [("MultiStepLR", {"milestones": [0, 3], "gamma": 0.3})],
    [("ConstantLR", {})], [("ConstantLR", {"factor": 0.5, "total_iters": 3})],
    [("ConstantLR", {"factor": 1.0, "total_iters": 0})],
    [("LinearLR", {})], [("LinearLR", {"start_factor": 0.1, "end_factor": 0.9, "total_iters": 10})],
    [("LinearLR", {"start_factor": 1.0, "end_factor": 0.0, "total_iters": 30})],
    [("ExponentialLR", {"gamma": 0.9})], [("ExponentialLR", {"gamma": 1.05})],
    [("PolynomialLR", {})], [("PolynomialLR", {"total_iters": 20, "power": 2.0})],
    [("PolynomialLR", {"total_iters": 40, "power": 0.5})],
    [("CosineAnnealingLR", {"T_max": 10})], [("CosineAnnealingLR", {"T_max": 7, "eta_min": 0.001})],
    [("CosineAnnealingLR", {"T_max": 30})],
    [("CosineAnnealingWarmRestarts", {"T_0": 5})],
    [("CosineAnnealingWarmRestarts", {"T_0": 3, "T_mult": 2, "eta_min": 0.01})],
    [("CyclicLR", {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 4})],
    [("CyclicLR", {"base_lr": 0.02, "max_lr": 0.2, "step_size_up": 3, "step_size_down": 5, "mode": "triangular2"})],
    [("CyclicLR", {"base_lr": 0.001, "max_lr": 0.05, "step_size_up": 2, "mode": "exp_range", "gamma": 0.9})],
    [("OneCycleLR", {"max_lr": 0.5, "total_steps": 31})],
    [("OneCycleLR", {"max_lr": 1.0, "epochs": 4, "steps_per_epoch": 8, "anneal_strategy": "linear",
                     "three_phase": True, "pct_start": 0.25})],
    [("ReduceLROnPlateau", {})], [("ReduceLROnPlateau", {"mode": "max", "patience": 3})],
    [("MultiStepMultiGammaLR", {"milestones": [3, 9, 20], "gammas": [0.1, 0.5, 0.2]})],
    [("StepLR", {"step_size": 4, "gamma": 0.5}), ("ExponentialLR", {"gamma": 0.95})],
    [("OneCycleLR", {"max_lr": 0.3, "total_steps": 40}), ("StepLR", {"step_size": 5})],
    [("CyclicLR", {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 5}), ("MultiStepLR", {"milestones": [4, 8]})],
    [("LinearLR", {"total_iters": 4}), ("CosineAnnealingLR", {"T_max": 12})],
]
EPOCHS = 30


def _torch_lrs(case: list[tuple[str, dict[str, Any]]], lr: float) -> list[float]:
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        schedulers = [LR_SCHEDULERS[name].impl()(optimizer, **args) for name, args in case]
        seen = []
        for _ in range(EPOCHS):
            seen.append(float(optimizer.param_groups[0]["lr"]))
            for scheduler, (name, _args) in zip(schedulers, case, strict=True):
                if not LR_SCHEDULERS[name].metric_driven:
                    scheduler.step()
    return seen


def _ours(case: list[tuple[str, dict[str, Any]]], lr: float) -> list[float]:
    group: dict[str, Any] = {"lr": lr}
    steppers = [LR_SCHEDULERS[name].start(group, args) for name, args in case]
    seen = []
    for _ in range(EPOCHS):
        seen.append(float(group["lr"]))
        for stepper, (name, _args) in zip(steppers, case, strict=True):
            if not LR_SCHEDULERS[name].metric_driven:
                stepper.step()
    return seen


def test_every_class_has_cases() -> None:
    covered = {name for case in CASES for name, _ in case}
    assert covered == set(LR_SCHEDULERS)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "+".join(f"{n}{sorted(a.items())}" for n, a in c))
@pytest.mark.parametrize("lr", [0.1, 0.037])
def test_lr_per_epoch_equals_torch(case: list[tuple[str, dict[str, Any]]], lr: float) -> None:
    want, got = _torch_lrs(case, lr), _ours(case, lr)
    assert got == pytest.approx(want, rel=1e-12, abs=0)
    assert len(set(want)) > 1 or case[0][0] in ("ReduceLROnPlateau", "ConstantLR")  # the cases do move the lr


def _schedule(cls: str, args: str) -> str:
    return (f"version: 1\nlr_schedulers:\n  lr:\n    class: {cls}\n{args}policies:\n"
            "  - lr_scheduler: {instance_name: lr}\n    starting_epoch: 0\n    ending_epoch: 10\n")


@pytest.mark.parametrize(("cls", "args", "key", "words"), [
    ("OneCycleLR", "    max_lr: 0.1\n", "lr_schedulers.lr", "total_steps"),
    ("ConstantLR", "    factor: 2\n", "lr_schedulers.lr.factor", "between 0 and 1"),
    ("StepLR", "    step_size: 2\n    gamma: fast\n", "lr_schedulers.lr.gamma", "must be a number"),
    ("CosineAnnealingWarmRestarts", "    T_0: 0\n", "lr_schedulers.lr.T_0", "positive integer"),
    ("OneCycleLR", "    max_lr: 0.1\n    total_steps: 5\n    pct_start: 0\n", "lr_schedulers.lr.pct_start", "float"),
    ("CyclicLR", "    base_lr: 0.1\n    max_lr: 1\n    mode: sine\n", "lr_schedulers.lr.mode", "triangular"),
    ("MultiStepMultiGammaLR", "    milestones: [5, 2]\n    gammas: [0.1, 0.1]\n", "lr_schedulers.lr.milestones",
     "increasing"),
])
def test_arguments_torch_would_refuse_are_located_errors(cls: str, args: str, key: str, words: str) -> None:
    with pytest.raises(ScheduleError) as err:
        parse_schedule(_schedule(cls, args), source="s.yaml")
    assert err.value.key == key and err.value.line is not None and words in err.value.reason


def test_one_cycle_that_runs_out_of_steps_is_a_located_preview_error() -> None:
    schedule = parse_schedule(_schedule("OneCycleLR", "    max_lr: 0.1\n    total_steps: 4\n"), source="s.yaml")
    with pytest.raises(ScheduleError, match=r"lr_schedulers\.lr: OneCycleLR is stepped 5 times, more than its 4"):
        preview(schedule, {"fc.weight": (2, 2)})
