"""A schedule as data: pruners, lr schedulers, regularizers, extensions and the policies that say when
each acts, in Distiller's layout."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ScheduleError
from .loader import _Lines

Path_ = tuple  # a key path such as ("pruners", "p1", "weights", 2)


@dataclass
class PrunerSpec:
    """One entry of ``pruners:``: an instance name, a class name and its arguments as written."""

    name: str
    cls: str
    args: dict[str, Any]


RegularizerSpec = PrunerSpec  # ``regularizers:`` entries: same shape (name, class, arguments)
ExtensionSpec = PrunerSpec  # ``extensions:`` entries (FilterRemover ...)


@dataclass
class LRSchedulerSpec:
    """One entry of ``lr_schedulers:``: a ``torch.optim.lr_scheduler`` class name and its arguments."""

    name: str
    cls: str
    args: dict[str, Any]


@dataclass
class PolicySpec:
    """One entry of ``policies:``: what runs (a pruner or an lr scheduler) and at which epochs.

    Either ``epochs`` (an explicit list) or ``starting_epoch``/``ending_epoch``/``frequency``; the
    active epochs are then ``range(starting_epoch, ending_epoch, frequency)``, as in Distiller.
    """

    kind: str  # "pruner" | "lr_scheduler" | "regularizer" | "extension"
    instance_name: str
    epochs: list[int] | None = None
    starting_epoch: int | None = None
    ending_epoch: int | None = None
    frequency: int = 1
    # per-policy args as written (pruner: keep_mask, mask_on_forward_only, ...; regularizer: keep_mask); the
    # class's declaration (declarations.POLICY_ARGUMENTS) says which it takes and their defaults
    args: dict[str, Any] = field(default_factory=dict)

    def active_epochs(self) -> list[int]:
        """Epochs at which this policy acts (sorted)."""
        if self.epochs is not None:
            return sorted(set(self.epochs))
        assert self.starting_epoch is not None and self.ending_epoch is not None
        return list(range(self.starting_epoch, self.ending_epoch, self.frequency))

    def span(self) -> tuple[int, int, int]:
        """(start, end, frequency) that AGP's formula uses; an ``epochs`` list counts as first..last+1."""
        epochs = self.active_epochs()
        if self.epochs is not None:
            return epochs[0], epochs[-1] + 1, 1
        assert self.starting_epoch is not None and self.ending_epoch is not None
        return self.starting_epoch, self.ending_epoch, self.frequency


@dataclass
class Schedule:
    """A whole schedule. ``lines`` maps key paths to YAML lines, for located errors after parsing."""

    pruners: dict[str, PrunerSpec] = field(default_factory=dict)
    lr_schedulers: dict[str, LRSchedulerSpec] = field(default_factory=dict)
    policies: list[PolicySpec] = field(default_factory=list)
    version: int = 1
    regularizers: dict[str, RegularizerSpec] = field(default_factory=dict)
    extensions: dict[str, ExtensionSpec] = field(default_factory=dict)
    source: str = field(default="<schedule>", compare=False)
    lines: dict[tuple, int] = field(default_factory=dict, compare=False, repr=False)
    # (name in the schedule, name in the model) for every name resolve_schedule changed
    renames: list[tuple[str, str]] = field(default_factory=list, compare=False)
    # accepted but worth a look, each located (``s.yaml line 9: pruners.p1.weights: key given twice ...``)
    warnings: list[str] = field(default_factory=list, compare=False)

    def error(self, path: Sequence[Any], message: str) -> ScheduleError:
        """A ScheduleError located at ``path`` (the nearest known line)."""
        helper = _Lines(self.source)
        helper.lines = self.lines
        return helper.error(path, message)

    def last_epoch(self) -> int:
        """The last epoch at which any policy acts (-1 when there is none)."""
        return max((max(p.active_epochs(), default=-1) for p in self.policies), default=-1)

    def to_dict(self) -> dict[str, Any]:
        """Plain data in Distiller's layout (what :func:`dump_schedule` writes)."""
        out: dict[str, Any] = {"version": self.version}
        if self.pruners:
            out["pruners"] = {n: {"class": p.cls, **p.args} for n, p in self.pruners.items()}
        if self.lr_schedulers:
            out["lr_schedulers"] = {n: {"class": s.cls, **s.args} for n, s in self.lr_schedulers.items()}
        if self.regularizers:
            out["regularizers"] = {n: {"class": r.cls, **r.args} for n, r in self.regularizers.items()}
        if self.extensions:
            out["extensions"] = {n: {"class": e.cls, **e.args} for n, e in self.extensions.items()}
        policies = []
        for p in self.policies:
            entry: dict[str, Any] = {p.kind: {"instance_name": p.instance_name, **({"args": p.args} if p.args else {})}}
            if p.epochs is not None:
                entry["epochs"] = list(p.epochs)
            else:
                entry.update(starting_epoch=p.starting_epoch, ending_epoch=p.ending_epoch, frequency=p.frequency)
            policies.append(entry)
        out["policies"] = policies
        return out
