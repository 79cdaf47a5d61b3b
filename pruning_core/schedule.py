"""Distiller YAML pruning schedules: parse, validate, resolve against a model, write back.

A schedule is data (``version: 1``, ``pruners:``, ``lr_schedulers:``, ``policies:``), as in Distiller.
Every mistake is a :class:`ScheduleError` that names the key path and the line it sits on, because a
silently ignored key in a long schedule costs a whole training run. Sections that Distiller has but we
do not run yet (``quantizers``, ``regularizers``, ``extensions``) are errors for now; the parser is
table-driven (:data:`PRUNER_CLASSES`) so that supporting them means adding entries, not rewriting.
"""

from __future__ import annotations

import fnmatch
import inspect
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Path_ = tuple  # a key path such as ("pruners", "p1", "weights", 2)


class ScheduleError(ValueError):
    """A schedule mistake, located: ``s.yaml line 7: pruners.p1.final_sparsity: must be ...``."""

    def __init__(self, message: str, *, key: str = "", line: int | None = None, source: str = "<schedule>"):
        self.key, self.line, self.source, self.reason = key, line, source, message
        where = source + (f" line {line}" if line is not None else "")
        super().__init__(f"{where}: {key + ': ' if key else ''}{message}")


# --------------------------------------------------------------------------------------------------
# Reading YAML with line numbers
# --------------------------------------------------------------------------------------------------


def _key_text(path: Sequence[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (("." if out else "") + str(part))
    return out


class _Lines:
    """Line of every key path (1-based), filled while converting the composed YAML tree."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: dict[tuple, int] = {}

    def line(self, path: Sequence[Any]) -> int | None:
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)

    def error(self, path: Sequence[Any], message: str) -> ScheduleError:
        return ScheduleError(message, key=_key_text(path), line=self.line(path), source=self.source)


def _to_python(node: yaml.Node, path: tuple, lines: _Lines, loader: yaml.SafeLoader) -> Any:
    """Convert a composed node to plain data, recording the line of each key; duplicate keys are errors."""
    lines.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise ScheduleError("a key must be a plain value", key=_key_text(path),
                                    line=key_node.start_mark.line + 1, source=lines.source)
            key = loader.construct_object(key_node)
            lines.lines[path + (key,)] = key_node.start_mark.line + 1  # a key's line, not its value's
            if key in out:
                raise lines.error(path + (key,), "key given twice")
            out[key] = _to_python(value_node, path + (key,), lines, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, path + (i,), lines, loader) for i, item in enumerate(node.value)]
    return loader.construct_object(node)


def _compose(text: str, source: str) -> tuple[Any, _Lines]:
    lines = _Lines(source)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ScheduleError(f"not valid YAML: {problem}", line=mark.line + 1 if mark else None,
                            source=source) from None
    if root is None:
        raise ScheduleError("the schedule is empty", line=1, source=source)
    return _to_python(root, (), lines, yaml.SafeLoader("")), lines


# --------------------------------------------------------------------------------------------------
# The data model
# --------------------------------------------------------------------------------------------------


@dataclass
class PrunerSpec:
    """One entry of ``pruners:``: an instance name, a class name and its arguments as written."""

    name: str
    cls: str
    args: dict[str, Any]


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

    kind: str  # "pruner" | "lr_scheduler"
    instance_name: str
    epochs: list[int] | None = None
    starting_epoch: int | None = None
    ending_epoch: int | None = None
    frequency: int = 1

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
    source: str = field(default="<schedule>", compare=False)
    lines: dict[tuple, int] = field(default_factory=dict, compare=False, repr=False)

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
        policies = []
        for p in self.policies:
            entry: dict[str, Any] = {p.kind: {"instance_name": p.instance_name}}
            if p.epochs is not None:
                entry["epochs"] = list(p.epochs)
            else:
                entry.update(starting_epoch=p.starting_epoch, ending_epoch=p.ending_epoch, frequency=p.frequency)
            policies.append(entry)
        out["policies"] = policies
        return out


# --------------------------------------------------------------------------------------------------
# Argument checkers (one per kind of value) and the pruner class table
# --------------------------------------------------------------------------------------------------

Checker = Callable[[Any], str | None]  # returns an error message, or None when the value is fine


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _fraction(v: Any) -> str | None:
    if not _is_number(v):
        return f"must be a number, got {v!r}"
    if not 0.0 <= v < 1.0:
        return f"must be a sparsity in [0, 1), got {v}"
    return None


def _non_negative(v: Any) -> str | None:
    if not _is_number(v) or v < 0:
        return f"must be a non-negative number, got {v!r}"
    return None


def _positive_int(v: Any) -> str | None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        return f"must be a positive integer, got {v!r}"
    return None


def _int(v: Any) -> str | None:
    if isinstance(v, bool) or not isinstance(v, int):
        return f"must be an integer, got {v!r}"
    return None


def _group_type(v: Any) -> str | None:
    if v not in GROUP_TYPES:
        return f"must be one of {', '.join(GROUP_TYPES)}, got {v!r}"
    return None


def _weights(v: Any) -> str | None:
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not items:
        return "must be a parameter name or a non-empty list of names (globs allowed)"
    for item in items:
        if not isinstance(item, str) or not item:
            return f"must hold parameter names, got {item!r}"
    return None


def _per_param(value_check: Checker) -> Checker:
    def check(v: Any) -> str | None:
        if not isinstance(v, dict) or not v:
            return "must be a mapping of parameter name (or glob, '*' for the rest) to a value"
        for name, value in v.items():
            if not isinstance(name, str):
                return f"key {name!r} is not a parameter name"
            problem = value_check(value)
            if problem:
                return f"{name}: {problem}"
        return None

    return check


GROUP_TYPES = ("Filters", "Channels")
GROUP_OF = {"Filters": "filters", "Channels": "channels"}  # Distiller group_type -> pruners.structure_mask group


@dataclass(frozen=True)
class PrunerClass:
    """What a pruner class accepts: required and optional arguments with their checkers."""

    required: dict[str, Checker]
    optional: dict[str, Checker] = field(default_factory=dict)
    agp: bool = False  # its sparsity follows the AGP curve over the policy's epochs

    def argument_names(self) -> list[str]:
        return [*self.required, *self.optional]


PRUNER_CLASSES: dict[str, PrunerClass] = {
    "AutomatedGradualPruner": PrunerClass(
        {"initial_sparsity": _fraction, "final_sparsity": _fraction, "weights": _weights}, agp=True),
    "L1RankedStructureParameterPruner_AGP": PrunerClass(
        {"initial_sparsity": _fraction, "final_sparsity": _fraction, "group_type": _group_type,
         "weights": _weights}, agp=True),
    "SparsityLevelParameterPruner": PrunerClass({"levels": _per_param(_fraction)}),
    "MagnitudeParameterPruner": PrunerClass({"thresholds": _per_param(_non_negative)}),
    "SensitivityPruner": PrunerClass({"sensitivities": _per_param(_non_negative)}),
    "L1RankedStructureParameterPruner": PrunerClass(
        {"group_type": _group_type, "desired_sparsity": _fraction, "weights": _weights}),
    "NMStructuredPruner": PrunerClass({"n": _positive_int, "m": _positive_int, "weights": _weights}),
    "RandomPruner": PrunerClass({"level": _fraction, "weights": _weights}, {"seed": _int}),
}

# Distiller sections we know but do not run yet: an error that says so, not "unknown key".
NOT_YET = {
    "quantizers": "quantization is not supported yet",
    "regularizers": "regularizers are not supported yet",
    "extensions": "extensions (e.g. FilterRemover thinning) are not supported yet; use --thin",
}
POLICY_KINDS = ("pruner", "lr_scheduler")
POLICY_NOT_YET = ("quantizer", "regularizer", "extension")
TOP_LEVEL = ("version", "pruners", "lr_schedulers", "policies")
# lr scheduler classes whose arguments cannot be written in YAML (callables, other schedulers) or that
# need a metric each step.
LR_UNSUPPORTED = {"LambdaLR", "MultiplicativeLR", "SequentialLR", "ChainedScheduler", "ReduceLROnPlateau",
                  "LRScheduler", "_LRScheduler"}


def _closest(word: str, options: Iterable[str]) -> str:
    import difflib

    options = list(options)
    near = difflib.get_close_matches(word, options, n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return f"{hint}; known: {', '.join(sorted(options))}" if options else hint


def _lr_scheduler_class(name: str) -> type | None:
    import torch.optim.lr_scheduler as lrs

    cls = getattr(lrs, name, None)
    if name in LR_UNSUPPORTED or name.startswith("_") or not inspect.isclass(cls):
        return None
    if not issubclass(cls, lrs.LRScheduler if hasattr(lrs, "LRScheduler") else lrs._LRScheduler):
        return None
    return cls


def lr_scheduler_names() -> list[str]:
    """The ``torch.optim.lr_scheduler`` classes a schedule may name."""
    import torch.optim.lr_scheduler as lrs

    return sorted(n for n in dir(lrs) if _lr_scheduler_class(n) is not None)


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def _mapping(value: Any, path: tuple, lines: _Lines, what: str) -> dict:
    if not isinstance(value, dict):
        raise lines.error(path, f"must be a mapping of {what}")
    return value


def _parse_pruners(data: Any, lines: _Lines) -> dict[str, PrunerSpec]:
    out = {}
    for name, body in _mapping(data, ("pruners",), lines, "instance name to pruner").items():
        path = ("pruners", name)
        body = _mapping(body, path, lines, "arguments (with 'class')")
        cls = body.get("class")
        if cls is None:
            raise lines.error(path, "missing 'class'")
        if cls not in PRUNER_CLASSES:
            raise lines.error(path + ("class",), f"unknown pruner class {cls!r}{_closest(str(cls), PRUNER_CLASSES)}")
        spec = PRUNER_CLASSES[cls]
        args = {k: v for k, v in body.items() if k != "class"}
        for key in args:
            if key not in spec.argument_names():
                hint = _closest(str(key), spec.argument_names())
                raise lines.error(path + (key,), f"unknown argument for {cls}{hint}")
        for key in spec.required:
            if key not in args:
                raise lines.error(path, f"{cls} needs '{key}'")
        for key, value in args.items():
            checker = spec.required.get(key) or spec.optional[key]
            problem = checker(value)
            if problem:
                raise lines.error(path + (key,), problem)
        if spec.agp and not args["final_sparsity"] > args["initial_sparsity"]:
            raise lines.error(path + ("final_sparsity",), "must be greater than initial_sparsity")
        if isinstance(args.get("weights"), str):
            args["weights"] = [args["weights"]]
        out[name] = PrunerSpec(name, cls, args)
    return out


def _parse_lr_schedulers(data: Any, lines: _Lines) -> dict[str, LRSchedulerSpec]:
    out = {}
    for name, body in _mapping(data, ("lr_schedulers",), lines, "instance name to lr scheduler").items():
        path = ("lr_schedulers", name)
        body = _mapping(body, path, lines, "arguments (with 'class')")
        cls_name = body.get("class")
        if cls_name is None:
            raise lines.error(path, "missing 'class'")
        cls = _lr_scheduler_class(str(cls_name))
        if cls is None:
            raise lines.error(path + ("class",), f"unknown or unsupported lr scheduler class {cls_name!r}"
                              f"{_closest(str(cls_name), lr_scheduler_names())}")
        params = inspect.signature(cls.__init__).parameters
        accepted = [p for p in params if p not in ("self", "optimizer", "last_epoch", "verbose")
                    and params[p].kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
        args = {k: v for k, v in body.items() if k != "class"}
        for key in args:
            if key not in accepted:
                raise lines.error(path + (key,), f"unknown argument for {cls_name}{_closest(str(key), accepted)}")
        for key in accepted:
            if params[key].default is inspect.Parameter.empty and key not in args:
                raise lines.error(path, f"{cls_name} needs '{key}'")
        out[name] = LRSchedulerSpec(name, str(cls_name), args)
    return out


def _epoch_value(value: Any, path: tuple, lines: _Lines) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise lines.error(path, f"must be a non-negative integer epoch, got {value!r}")
    return value


def _parse_policy(i: int, body: Any, lines: _Lines, schedule: Schedule) -> PolicySpec:
    path: tuple = ("policies", i)
    body = _mapping(body, path, lines, "a pruner or lr_scheduler reference and its epochs")
    kinds = [k for k in body if k in POLICY_KINDS or k in POLICY_NOT_YET]
    for key in body:
        if key in POLICY_NOT_YET:
            raise lines.error(path + (key,), f"{key} policies are not supported yet")
        if key not in (*POLICY_KINDS, "epochs", "starting_epoch", "ending_epoch", "frequency"):
            raise lines.error(path + (key,), "unknown policy key; a policy has pruner or lr_scheduler, "
                              "and epochs or starting_epoch/ending_epoch/frequency")
    if len(kinds) != 1:
        raise lines.error(path, "a policy names exactly one of: pruner, lr_scheduler")
    kind = kinds[0]
    ref = _mapping(body[kind], path + (kind,), lines, "instance_name")
    for key in ref:
        if key != "instance_name":
            raise lines.error(path + (kind, key), f"unknown key (only instance_name is supported; "
                              f"{'per-policy args are not supported yet' if key == 'args' else 'typo?'})")
    if "instance_name" not in ref:
        raise lines.error(path + (kind,), "missing 'instance_name'")
    instance = ref["instance_name"]
    known = schedule.pruners if kind == "pruner" else schedule.lr_schedulers
    if instance not in known:
        section = "pruners" if kind == "pruner" else "lr_schedulers"
        raise lines.error(path + (kind, "instance_name"),
                          f"no {kind} named {instance!r} in {section}{_closest(str(instance), known)}")
    policy = PolicySpec(kind, instance)
    if "epochs" in body:
        for key in ("starting_epoch", "ending_epoch", "frequency"):
            if key in body:
                raise lines.error(path + (key,), "give either epochs or starting_epoch/ending_epoch, not both")
        epochs = body["epochs"]
        if not isinstance(epochs, list) or not epochs:
            raise lines.error(path + ("epochs",), "must be a non-empty list of epochs")
        policy.epochs = [_epoch_value(e, path + ("epochs", j), lines) for j, e in enumerate(epochs)]
    else:
        for key in ("starting_epoch", "ending_epoch"):
            if key not in body:
                raise lines.error(path, f"missing '{key}' (or give 'epochs: [...]')")
        policy.starting_epoch = _epoch_value(body["starting_epoch"], path + ("starting_epoch",), lines)
        policy.ending_epoch = _epoch_value(body["ending_epoch"], path + ("ending_epoch",), lines)
        if policy.ending_epoch <= policy.starting_epoch:
            raise lines.error(path + ("ending_epoch",), f"ends ({policy.ending_epoch}) at or before it starts "
                              f"({policy.starting_epoch}); ending_epoch is excluded, like range()")
        if "frequency" in body:
            problem = _positive_int(body["frequency"])
            if problem:
                raise lines.error(path + ("frequency",), problem)
            policy.frequency = body["frequency"]
    if kind == "pruner" and PRUNER_CLASSES[schedule.pruners[instance].cls].agp:
        if policy.epochs is not None:
            raise lines.error(path + ("epochs",), "an AGP pruner needs starting_epoch/ending_epoch/frequency "
                              "(for one-shot pruning use SparsityLevelParameterPruner or "
                              "L1RankedStructureParameterPruner)")
        start, end, freq = policy.span()
        if (end - start - 1) // freq * freq <= 0:
            raise lines.error(path + ("ending_epoch",), f"AGP needs at least two pruning epochs: "
                              f"span ((end - start - 1) // frequency) * frequency is 0 for {start}..{end}/{freq}")
    return policy


def parse_schedule(text: str, *, source: str = "<schedule>") -> Schedule:
    """Parse and validate schedule YAML text; raise :class:`ScheduleError` naming key and line."""
    data, lines = _compose(text, source)
    if not isinstance(data, dict):
        raise lines.error((), "a schedule is a mapping with version, pruners, lr_schedulers and policies")
    for key in data:
        if key in NOT_YET:
            raise lines.error((key,), NOT_YET[key])
        if key not in TOP_LEVEL:
            raise lines.error((key,), f"unknown top-level key{_closest(str(key), TOP_LEVEL)}")
    if data.get("version", 1) != 1:
        raise lines.error(("version",), f"only version 1 exists, got {data['version']!r}")
    schedule = Schedule(source=source, lines=lines.lines)
    if data.get("pruners") is not None:
        schedule.pruners = _parse_pruners(data["pruners"], lines)
    if data.get("lr_schedulers") is not None:
        schedule.lr_schedulers = _parse_lr_schedulers(data["lr_schedulers"], lines)
    policies = data.get("policies")
    if policies is None:
        raise lines.error((), "missing 'policies' (nothing would run)")
    if not isinstance(policies, list):
        raise lines.error(("policies",), "must be a list of policies")
    schedule.policies = [_parse_policy(i, p, lines, schedule) for i, p in enumerate(policies)]
    return schedule


def load_schedule(path: str | Path) -> Schedule:
    """Read and validate a schedule file (errors name the file, key and line)."""
    path = Path(path)
    return parse_schedule(path.read_text(), source=str(path))


def dump_schedule(schedule: Schedule) -> str:
    """The schedule as Distiller YAML (parse_schedule(dump_schedule(s)) == s)."""
    return yaml.safe_dump(schedule.to_dict(), sort_keys=False, default_flow_style=None, width=100)


def write_schedule(schedule: Schedule, path: str | Path) -> None:
    """Write the schedule as Distiller YAML."""
    Path(path).write_text(dump_schedule(schedule))


# --------------------------------------------------------------------------------------------------
# Resolving names against a model
# --------------------------------------------------------------------------------------------------


def match_params(pattern: str, names: Sequence[str]) -> list[str]:
    """Parameter names matching an exact name or a glob (``'*'``, ``layer1.*.conv1.weight``).

    Exact names match exactly (never by substring: Distiller's ``'10.weight'`` bug).
    """
    if pattern in names:
        return [pattern]
    if any(ch in pattern for ch in "*?["):
        return [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    return []


def resolve_weights(schedule: Schedule, model: Any) -> dict[str, list[str]]:
    """Check every parameter name in the pruners against ``model.named_parameters()``.

    Exact names may name any parameter; globs match conv/linear weights only (``pruners`` rules).
    Returns, per pruner, the resolved parameter names (``weights`` lists, or the keys of per-parameter
    mappings with ``'*'`` left as the default). Unknown names raise a ScheduleError at their line.
    """
    from .metrics import prunable_parameters

    names = [n for n, _ in model.named_parameters()]
    prunable = [n for n, _ in prunable_parameters(model)]  # what globs match, as in pruners.py
    resolved: dict[str, list[str]] = {}
    for pname, spec in schedule.pruners.items():
        found: list[str] = []
        if "weights" in spec.args:
            entries = [(("pruners", pname, "weights", i), w) for i, w in enumerate(spec.args["weights"])]
        else:
            key = next(k for k in PRUNER_CLASSES[spec.cls].required)  # levels/thresholds/sensitivities
            entries = [(("pruners", pname, key, w), w) for w in spec.args[key] if w != "*"]
        for path, pattern in entries:
            matched = [pattern] if pattern in names else match_params(pattern, prunable)
            if not matched:
                raise schedule.error(path, f"no parameter named {pattern!r} in the model"
                                     f"{_closest(pattern, names) if len(names) < 60 else ''}")
            found.extend(m for m in matched if m not in found)
        resolved[pname] = found
    return resolved
