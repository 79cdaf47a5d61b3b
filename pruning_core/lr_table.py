"""The learning-rate scheduler classes a schedule may name, declared torch-free, with a stepper each.

``lr_schedulers:`` entries name ``torch.optim.lr_scheduler`` classes (and Distiller's
``MultiStepMultiGammaLR``, :mod:`pruning_core.lr_schedulers`). :data:`LR_SCHEDULERS` holds, per class,
its arguments as torch's ``__init__`` declares them (required names, optional names with defaults; a
test keeps the table equal to ``inspect.signature`` of the installed classes) and a small stepper
that computes the lr torch would set, epoch by epoch, with torch's own float arithmetic (its recursive
``get_lr`` forms, on a plain dict standing in for the optimizer's param group, so chained schedulers
compose as they do on a real optimizer). The parser and the preview use it; only training builds
torch's classes (``LRSchedulerDeclaration.impl``).
"""

from __future__ import annotations

import importlib
import math
from bisect import bisect_right
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Group = dict[str, Any]  # stands in for ``optimizer.param_groups[0]`` of an SGD optimizer


class LRArgumentError(ValueError):
    """An lr scheduler argument torch would refuse; ``key`` is the argument (or "" for the entry)."""

    def __init__(self, message: str, key: str = "") -> None:
        super().__init__(message)
        self.key = key


class _Stepper:
    """torch's ``LRScheduler`` protocol on a dict: the constructor takes ``initial_lr`` and steps once."""

    def __init__(self, group: Group) -> None:
        self.group = group
        group.setdefault("initial_lr", group["lr"])
        self.base_lr = group["initial_lr"]
        self.last_epoch = -1
        self.step_count = 0
        self.initial = True
        self.step()
        self.initial = False

    def get_lr(self) -> float:
        raise NotImplementedError

    def step(self) -> None:
        """One ``scheduler.step()``: advance the epoch and set the group's lr."""
        self.step_count += 1
        self.last_epoch += 1
        self.group["lr"] = self.get_lr()


class _StepLR(_Stepper):
    def __init__(self, group: Group, step_size: int, gamma: float = 0.1) -> None:
        self.step_size, self.gamma = step_size, gamma
        super().__init__(group)

    def get_lr(self) -> float:
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self.group["lr"]
        return self.group["lr"] * self.gamma


class _MultiStepLR(_Stepper):
    def __init__(self, group: Group, milestones: list[int], gamma: float = 0.1) -> None:
        self.milestones, self.gamma = Counter(milestones), gamma
        super().__init__(group)

    def get_lr(self) -> float:
        if self.last_epoch not in self.milestones:
            return self.group["lr"]
        return self.group["lr"] * self.gamma ** self.milestones[self.last_epoch]


class _ConstantLR(_Stepper):
    def __init__(self, group: Group, factor: float = 1.0 / 3, total_iters: int = 5) -> None:
        if factor > 1.0 or factor < 0:
            raise LRArgumentError("Constant multiplicative factor expected to be between 0 and 1.", "factor")
        self.factor, self.total_iters = factor, total_iters
        super().__init__(group)

    def get_lr(self) -> float:
        if self.last_epoch == 0:
            return self.group["lr"] * self.factor
        if self.last_epoch != self.total_iters:
            return self.group["lr"]
        return self.group["lr"] * (1.0 / self.factor)


class _LinearLR(_Stepper):
    def __init__(self, group: Group, start_factor: float = 1.0 / 3, end_factor: float = 1.0,
                 total_iters: int = 5) -> None:
        if start_factor > 1.0 or start_factor <= 0:
            raise LRArgumentError("must be in (0, 1] (the starting multiplicative factor)", "start_factor")
        if end_factor > 1.0 or end_factor < 0:
            raise LRArgumentError("must be in [0, 1] (the ending multiplicative factor)", "end_factor")
        self.start_factor, self.end_factor, self.total_iters = start_factor, end_factor, total_iters
        super().__init__(group)

    def get_lr(self) -> float:
        if self.last_epoch == 0:
            return self.group["lr"] * self.start_factor
        if self.initial or self.last_epoch > self.total_iters:
            return self.group["lr"]
        return self.group["lr"] * (1.0 + (self.end_factor - self.start_factor) / (
            self.total_iters * self.start_factor + (self.last_epoch - 1) * (self.end_factor - self.start_factor)))


class _ExponentialLR(_Stepper):
    def __init__(self, group: Group, gamma: float) -> None:
        self.gamma = gamma
        super().__init__(group)

    def get_lr(self) -> float:
        return self.group["lr"] if self.initial else self.group["lr"] * self.gamma


class _PolynomialLR(_Stepper):
    def __init__(self, group: Group, total_iters: int = 5, power: float = 1.0) -> None:
        self.total_iters, self.power = total_iters, power
        super().__init__(group)

    def get_lr(self) -> float:
        if self.initial or self.last_epoch > self.total_iters:
            return self.group["lr"]
        decay = ((1.0 - self.last_epoch / self.total_iters)
                 / (1.0 - (self.last_epoch - 1) / self.total_iters)) ** self.power
        return self.group["lr"] * decay


class _CosineAnnealingLR(_Stepper):
    def __init__(self, group: Group, T_max: int, eta_min: float = 0.0) -> None:  # noqa: N803 (torch's name)
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(group)

    def get_lr(self) -> float:
        lr, t = self.group["lr"], self.T_max
        if self.initial:
            return lr
        if (self.last_epoch - 1 - t) % (2 * t) == 0:
            return lr + (self.base_lr - self.eta_min) * (1 - math.cos(math.pi / t)) / 2
        return ((1 + math.cos(math.pi * self.last_epoch / t)) / (1 + math.cos(math.pi * (self.last_epoch - 1) / t))
                * (lr - self.eta_min) + self.eta_min)


class _CosineAnnealingWarmRestarts(_Stepper):
    def __init__(self, group: Group, T_0: int, T_mult: int = 1, eta_min: float = 0.0) -> None:  # noqa: N803
        if isinstance(T_0, bool) or not isinstance(T_0, int) or T_0 <= 0:
            raise LRArgumentError(f"must be a positive integer, got {T_0!r}", "T_0")
        if isinstance(T_mult, bool) or not isinstance(T_mult, int) or T_mult < 1:
            raise LRArgumentError(f"must be an integer >= 1, got {T_mult!r}", "T_mult")
        self.T_0 = self.T_i = T_0
        self.T_mult, self.eta_min = T_mult, eta_min
        self.T_cur = -1
        super().__init__(group)

    def step(self) -> None:
        if self.last_epoch < 0:
            self.T_i, self.T_cur, self.last_epoch = self.T_0, 0, 0
        else:
            self.last_epoch += 1
            self.T_cur += 1
            if self.T_cur >= self.T_i:
                self.T_cur = self.T_cur % self.T_i
                self.T_i = self.T_i * self.T_mult
        self.group["lr"] = self.get_lr()

    def get_lr(self) -> float:
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * self.T_cur / self.T_i)) / 2


def _one(value: Any) -> Any:
    """torch's ``_format_param`` for one param group: a list must have exactly one value."""
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise LRArgumentError(f"has {len(value)} values, the preview's optimizer has 1 param group")
        return value[0]
    return value


class _CyclicLR(_Stepper):
    def __init__(self, group: Group, base_lr: float, max_lr: float, step_size_up: int = 2000,
                 step_size_down: int | None = None, mode: str = "triangular", gamma: float = 1.0,
                 scale_fn: Any = None, scale_mode: str = "cycle", cycle_momentum: bool = True,
                 base_momentum: float = 0.8, max_momentum: float = 0.9) -> None:
        base = _one(base_lr)
        group["lr"] = base
        self.max_lr = _one(max_lr)
        up = float(step_size_up)
        down = float(step_size_down) if step_size_down is not None else up
        self.total_size = up + down
        self.step_ratio = up / self.total_size
        if scale_fn is not None:
            raise LRArgumentError("a schedule cannot give a function; leave scale_fn out and choose a mode", "scale_fn")
        if mode not in ("triangular", "triangular2", "exp_range"):
            raise LRArgumentError(f"must be triangular, triangular2 or exp_range, got {mode!r}", "mode")
        self.mode, self.gamma = mode, gamma
        self.scale_mode = "iterations" if mode == "exp_range" else "cycle"
        super().__init__(group)
        self.base_lr = base

    def _scale(self, x: float) -> float:
        if self.mode == "triangular":
            return 1.0
        if self.mode == "triangular2":
            return 1 / (2.0 ** (x - 1))
        return self.gamma ** x

    def get_lr(self) -> float:
        cycle = math.floor(1 + self.last_epoch / self.total_size)
        x = 1.0 + self.last_epoch / self.total_size - cycle
        scale = x / self.step_ratio if x <= self.step_ratio else (x - 1) / (self.step_ratio - 1)
        height = (self.max_lr - self.base_lr) * scale
        return self.base_lr + height * self._scale(cycle if self.scale_mode == "cycle" else self.last_epoch)


class _OneCycleLR(_Stepper):
    def __init__(self, group: Group, max_lr: float, total_steps: int | None = None, epochs: int | None = None,
                 steps_per_epoch: int | None = None, pct_start: float = 0.3, anneal_strategy: str = "cos",
                 cycle_momentum: bool = True, base_momentum: float = 0.85, max_momentum: float = 0.95,
                 div_factor: float = 25.0, final_div_factor: float = 1e4, three_phase: bool = False) -> None:
        if total_steps is not None:
            if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps <= 0:
                raise LRArgumentError(f"must be a positive integer, got {total_steps!r}", "total_steps")
            self.total_steps = total_steps
        elif epochs is not None and steps_per_epoch is not None:
            for key, value in (("epochs", epochs), ("steps_per_epoch", steps_per_epoch)):
                if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                    raise LRArgumentError(f"must be a positive integer, got {value!r}", key)
            self.total_steps = epochs * steps_per_epoch
        else:
            raise LRArgumentError("OneCycleLR needs total_steps, or epochs and steps_per_epoch")
        n = self.total_steps
        if three_phase:
            self.phases = [(float(pct_start * n) - 1, "initial_lr", "max_lr"),
                           (float(2 * pct_start * n) - 2, "max_lr", "initial_lr"), (n - 1, "initial_lr", "min_lr")]
        else:
            self.phases = [(float(pct_start * n) - 1, "initial_lr", "max_lr"), (n - 1, "max_lr", "min_lr")]
        if not isinstance(pct_start, float) or pct_start < 0 or pct_start > 1:
            raise LRArgumentError(f"must be a float between 0 and 1 (0.3, not 0), got {pct_start!r}", "pct_start")
        if anneal_strategy not in ("cos", "linear"):
            raise LRArgumentError(f"must be cos or linear, got {anneal_strategy!r}", "anneal_strategy")
        self.anneal = anneal_strategy
        top = _one(max_lr)
        group["initial_lr"] = top / div_factor
        group["max_lr"] = top
        group["min_lr"] = group["initial_lr"] / final_div_factor
        super().__init__(group)

    def get_lr(self) -> float:
        step = self.last_epoch
        if step > self.total_steps:
            raise LRArgumentError(f"OneCycleLR is stepped {step} times, more than its {self.total_steps} total "
                                  "steps; raise total_steps (or epochs x steps_per_epoch) to the epochs it runs")
        start = 0.0
        for i, (end, lo, hi) in enumerate(self.phases):
            if step <= end or i == len(self.phases) - 1:
                pct = (step - start) / (end - start)
                a, b = self.group[lo], self.group[hi]
                if self.anneal == "cos":
                    return b + (a - b) / 2.0 * (math.cos(math.pi * pct) + 1)
                return (b - a) * pct + a
            start = end
        raise AssertionError("unreachable")


class _ReduceLROnPlateau:
    """Follows the validation loss, which a preview does not have: the lr stays (and it never steps)."""

    def __init__(self, group: Group, mode: str = "min", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0, min_lr: Any = 0,
                 eps: float = 1e-8) -> None:
        if factor >= 1.0:
            raise LRArgumentError(f"must be below 1.0, got {factor!r}", "factor")
        if mode not in ("min", "max"):
            raise LRArgumentError(f"must be min or max, got {mode!r}", "mode")
        if threshold_mode not in ("rel", "abs"):
            raise LRArgumentError(f"must be rel or abs, got {threshold_mode!r}", "threshold_mode")
        _one(min_lr)
        self.group = group

    def step(self) -> None:
        raise TypeError("ReduceLROnPlateau steps with a metric; the preview leaves its lr as it is")


class _MultiStepMultiGammaLR(_Stepper):
    def __init__(self, group: Group, milestones: list[int], gammas: list[float]) -> None:
        if list(milestones) != sorted(milestones):
            raise LRArgumentError(f"must be increasing, got {list(milestones)}", "milestones")
        if len(milestones) != len(gammas):
            raise LRArgumentError(f"must have one gamma per milestone, got {len(gammas)} for "
                                  f"{len(milestones)}", "gammas")
        self.milestones = list(milestones)
        self.factors = [1.0]
        for gamma in gammas:
            self.factors.append(gamma * self.factors[-1])
        super().__init__(group)

    def get_lr(self) -> float:
        return self.base_lr * self.factors[bisect_right(self.milestones, self.last_epoch)]


_TORCH = "torch.optim.lr_scheduler:"


@dataclass(frozen=True)
class LRSchedulerDeclaration:
    """One lr scheduler class: its arguments as its ``__init__`` has them (less ``optimizer`` and
    ``last_epoch``), whether a metric drives it, its torch-free stepper and its torch class."""

    name: str
    required: tuple[str, ...]
    optional: Mapping[str, Any] = field(default_factory=dict)  # name -> default
    stepper: type = _Stepper
    impl_path: str = ""
    metric_driven: bool = False  # ReduceLROnPlateau: steps with the validation loss

    def argument_names(self) -> list[str]:
        return [*self.required, *self.optional]

    def impl(self) -> type:
        """torch's class (or ours in lr_schedulers.py), imported now."""
        module, _, attr = (self.impl_path or _TORCH + self.name).partition(":")
        return getattr(importlib.import_module(module), attr)

    def start(self, group: Group, args: Mapping[str, Any]) -> Any:
        """A stepper bound to ``group`` (as constructing torch's class on an optimizer: it sets the lr)."""
        return self.stepper(group, **args)


LR_SCHEDULERS: dict[str, LRSchedulerDeclaration] = {d.name: d for d in (
    LRSchedulerDeclaration("ConstantLR", (), {"factor": 1.0 / 3, "total_iters": 5}, _ConstantLR),
    LRSchedulerDeclaration("CosineAnnealingLR", ("T_max",), {"eta_min": 0.0}, _CosineAnnealingLR),
    LRSchedulerDeclaration("CosineAnnealingWarmRestarts", ("T_0",), {"T_mult": 1, "eta_min": 0.0},
                           _CosineAnnealingWarmRestarts),
    LRSchedulerDeclaration("CyclicLR", ("base_lr", "max_lr"), {
        "step_size_up": 2000, "step_size_down": None, "mode": "triangular", "gamma": 1.0, "scale_fn": None,
        "scale_mode": "cycle", "cycle_momentum": True, "base_momentum": 0.8, "max_momentum": 0.9}, _CyclicLR),
    LRSchedulerDeclaration("ExponentialLR", ("gamma",), {}, _ExponentialLR),
    LRSchedulerDeclaration("LinearLR", (), {"start_factor": 1.0 / 3, "end_factor": 1.0, "total_iters": 5},
                           _LinearLR),
    LRSchedulerDeclaration("MultiStepLR", ("milestones",), {"gamma": 0.1}, _MultiStepLR),
    LRSchedulerDeclaration("OneCycleLR", ("max_lr",), {
        "total_steps": None, "epochs": None, "steps_per_epoch": None, "pct_start": 0.3, "anneal_strategy": "cos",
        "cycle_momentum": True, "base_momentum": 0.85, "max_momentum": 0.95, "div_factor": 25.0,
        "final_div_factor": 1e4, "three_phase": False}, _OneCycleLR),
    LRSchedulerDeclaration("PolynomialLR", (), {"total_iters": 5, "power": 1.0}, _PolynomialLR),
    LRSchedulerDeclaration("ReduceLROnPlateau", (), {
        "mode": "min", "factor": 0.1, "patience": 10, "threshold": 1e-4, "threshold_mode": "rel", "cooldown": 0,
        "min_lr": 0, "eps": 1e-8}, _ReduceLROnPlateau, metric_driven=True),
    LRSchedulerDeclaration("StepLR", ("step_size",), {"gamma": 0.1}, _StepLR),
    LRSchedulerDeclaration("MultiStepMultiGammaLR", ("milestones", "gammas"), {}, _MultiStepMultiGammaLR,
                           impl_path="pruning_core.lr_schedulers:MultiStepMultiGammaLR"),
)}
#: torch classes a schedule cannot use: their arguments are callables or other schedulers, not YAML.
LR_UNSUPPORTED = ("LambdaLR", "MultiplicativeLR", "SequentialLR", "ChainedScheduler", "LRScheduler", "_LRScheduler")


def lr_scheduler_names() -> list[str]:
    """The lr scheduler classes a schedule may name."""
    return sorted(LR_SCHEDULERS)
