"""Distiller YAML pruning schedules: parse, validate, resolve against a model, write back.

A schedule is data (``version: 1``, ``pruners:``, ``lr_schedulers:``, ``policies:``), as in Distiller.
Every mistake is a :class:`ScheduleError` that names the key path and the line it sits on, because a
silently ignored key in a long schedule costs a whole training run. The parser is table-driven
(:data:`PRUNER_CLASSES`, :data:`REGULARIZER_CLASSES`, :data:`EXTENSION_CLASSES`): supporting a class
means adding an entry. ``quantizers`` are refused (out of scope: prunescope prunes).

Distiller's published schedules name parameters as ``torch.nn.DataParallel`` saw them
(``module.layer1.0.conv1.weight``, ``features.module.0.weight``); :func:`resolve_schedule` maps them
to the model's names and records each mapping in ``Schedule.renames`` so it can be shown.
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
    try:
        return _to_python(root, (), lines, yaml.SafeLoader("")), lines
    except ScheduleError:
        raise
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:  # '=', '2020-99-99', '!!float x'
        raise ScheduleError(f"not valid YAML: {getattr(exc, 'problem', None) or exc}", source=source) from None


# --------------------------------------------------------------------------------------------------
# The data model
# --------------------------------------------------------------------------------------------------


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
    args: dict[str, Any] = field(default_factory=dict)  # per-policy args (regularizer: keep_mask)

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


# Distiller's ranked-structure group types (pruners.py turns them into masks).
GROUP_TYPES = ("Filters", "3D", "Channels", "Rows", "Blocks")
# Group Lasso group types (regularizers.py holds their definitions).
REGULARIZER_GROUP_TYPES = ("Filters", "3D", "Channels", "Rows", "Cols", "2D", "4D",
                           "Rows+Cols", "Cols+Rows", "Channels+4D", "4D+Channels")
THRESHOLD_CRITERIA = ("Mean_Abs", "Max")
THINNING_FUNCS = ("remove_filters", "remove_channels")


def _one_of(options: Sequence[str]) -> Checker:
    def check(v: Any) -> str | None:
        return None if v in options else f"must be one of {', '.join(options)}, got {v!r}"
    return check


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else f"must be true or false, got {v!r}"


def _text(v: Any) -> str | None:
    return None if isinstance(v, str) and v else f"must be a name, got {v!r}"


def _range(v: Any) -> str | None:
    if not (isinstance(v, list) and len(v) == 2 and all(_fraction(x) is None for x in v) and v[0] <= v[1]):
        return f"must be [low, high] sparsities with 0 <= low <= high < 1, got {v!r}"
    return None


def _block_kwargs(v: Any) -> str | None:
    shape = v.get("block_shape") if isinstance(v, dict) else None
    if not isinstance(v, dict) or set(v) != {"block_shape"}:
        return f"must be {{block_shape: [repetitions, depth, 1, 1]}}, got {v!r}"
    if not (isinstance(shape, list) and len(shape) == 4 and all(_positive_int(x) is None for x in shape)):
        return f"block_shape must be 4 positive integers [repetitions, depth, height, width], got {shape!r}"
    if shape[2:] != [1, 1]:
        return f"only block shapes repetitions x depth x 1 x 1 are supported (as Distiller), got {shape}"
    return None


def _group_regim(v: Any) -> str | None:
    if not (isinstance(v, list) and len(v) == 2 and _non_negative(v[0]) is None):
        return f"must be [strength, group type] (e.g. [0.0008, Filters]), got {v!r}"
    return _one_of(REGULARIZER_GROUP_TYPES)(v[1])


@dataclass(frozen=True)
class PrunerClass:
    """What a pruner class accepts: required and optional arguments with their checkers."""

    required: dict[str, Checker]
    optional: dict[str, Checker] = field(default_factory=dict)
    agp: bool = False  # its sparsity follows the AGP curve over the policy's epochs

    def argument_names(self) -> list[str]:
        return [*self.required, *self.optional]


_RANKED_OPTIONS: dict[str, Checker] = {"group_dependency": _one_of(("Leader",)), "kwargs": _block_kwargs}


PRUNER_CLASSES: dict[str, PrunerClass] = {
    "AutomatedGradualPruner": PrunerClass(
        {"initial_sparsity": _fraction, "final_sparsity": _fraction, "weights": _weights}, agp=True),
    "L1RankedStructureParameterPruner_AGP": PrunerClass(
        {"initial_sparsity": _fraction, "final_sparsity": _fraction, "group_type": _group_type,
         "weights": _weights}, _RANKED_OPTIONS, agp=True),
    "SparsityLevelParameterPruner": PrunerClass({"levels": _per_param(_fraction)}),
    "MagnitudeParameterPruner": PrunerClass({"thresholds": _per_param(_non_negative)}),
    "SensitivityPruner": PrunerClass({"sensitivities": _per_param(_non_negative)}),
    "L1RankedStructureParameterPruner": PrunerClass(
        {"group_type": _group_type, "desired_sparsity": _fraction, "weights": _weights}, _RANKED_OPTIONS),
    "RandomLevelStructureParameterPruner": PrunerClass(
        {"group_type": _group_type, "sparsity_range": _range, "weights": _weights},
        {**_RANKED_OPTIONS, "seed": _int}),
    "SplicingPruner": PrunerClass(
        {"sensitivities": _per_param(_non_negative), "low_thresh_mult": _non_negative,
         "hi_thresh_mult": _non_negative}, {"sensitivity_multiplier": _non_negative}),
    "NMStructuredPruner": PrunerClass({"n": _positive_int, "m": _positive_int, "weights": _weights}),
    "RandomPruner": PrunerClass({"level": _fraction, "weights": _weights}, {"seed": _int}),
}

REGULARIZER_CLASSES: dict[str, PrunerClass] = {
    "GroupLassoRegularizer": PrunerClass({"reg_regims": _per_param(_group_regim)},
                                         {"threshold_criteria": _one_of(THRESHOLD_CRITERIA)}),
    "L1Regularizer": PrunerClass({"reg_regims": _per_param(_non_negative)},
                                 {"threshold_criteria": _one_of(THRESHOLD_CRITERIA)}),
}
# Distiller's thinning extensions: all three are one StructureRemover whose function decides. prunescope
# thins with Torch-Pruning (dead filters and channels both); arch and dataset are checked against the job.
EXTENSION_CLASSES: dict[str, PrunerClass] = dict.fromkeys(
    ("FilterRemover", "ChannelRemover", "StructureRemover"),
    PrunerClass({"thinning_func_str": _one_of(THINNING_FUNCS), "arch": _text, "dataset": _text}))

# Distiller sections that prunescope refuses: an error that says why, not "unknown key".
REFUSED = {
    "quantizers": "quantizers are out of scope: prunescope runs pruning, regularization and thinning, not "
                  "quantization; remove the quantizers section and its quantizer policies",
}
SECTIONS: dict[str, tuple[str, dict[str, PrunerClass]]] = {  # section -> (policy kind, class table)
    "pruners": ("pruner", PRUNER_CLASSES),
    "regularizers": ("regularizer", REGULARIZER_CLASSES),
    "extensions": ("extension", EXTENSION_CLASSES),
}
POLICY_KINDS = ("pruner", "lr_scheduler", "regularizer", "extension")
POLICY_REFUSED = {"quantizer": REFUSED["quantizers"]}
POLICY_ARGS: dict[str, dict[str, Checker]] = {"regularizer": {"keep_mask": _bool}}  # kind -> per-policy args
TOP_LEVEL = ("version", "pruners", "lr_schedulers", "regularizers", "extensions", "policies")
# lr scheduler classes whose arguments cannot be written in YAML (callables, other schedulers).
LR_UNSUPPORTED = {"LambdaLR", "MultiplicativeLR", "SequentialLR", "ChainedScheduler", "LRScheduler", "_LRScheduler"}


def _closest(word: str, options: Iterable[str]) -> str:
    import difflib

    options = list(options)
    near = difflib.get_close_matches(word, options, n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return f"{hint}; known: {', '.join(sorted(options))}" if options else hint


def lr_scheduler_class(name: str) -> type | None:
    """The lr scheduler class a schedule may name: Distiller's own (``MultiStepMultiGammaLR``) or
    ``torch.optim.lr_scheduler``'s (``ReduceLROnPlateau`` included; it steps with the validation loss)."""
    import torch.optim.lr_scheduler as lrs

    from .lr_schedulers import EXTRA_LR_SCHEDULERS

    if name in EXTRA_LR_SCHEDULERS:
        return EXTRA_LR_SCHEDULERS[name]
    cls = getattr(lrs, name, None)
    if name in LR_UNSUPPORTED or name.startswith("_") or not inspect.isclass(cls):
        return None
    if cls is lrs.ReduceLROnPlateau:
        return cls
    if not issubclass(cls, lrs.LRScheduler if hasattr(lrs, "LRScheduler") else lrs._LRScheduler):
        return None
    return cls



def lr_scheduler_names() -> list[str]:
    """The lr scheduler classes a schedule may name."""
    import torch.optim.lr_scheduler as lrs

    from .lr_schedulers import EXTRA_LR_SCHEDULERS

    return sorted({*(n for n in dir(lrs) if lr_scheduler_class(n) is not None), *EXTRA_LR_SCHEDULERS})


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def _mapping(value: Any, path: tuple, lines: _Lines, what: str) -> dict:
    if not isinstance(value, dict):
        raise lines.error(path, f"must be a mapping of {what}")
    return value


def _parse_section(data: Any, lines: _Lines, section: str = "pruners") -> dict[str, PrunerSpec]:
    """Parse ``pruners:``, ``regularizers:`` or ``extensions:`` against its class table."""
    kind, table = SECTIONS[section]
    out = {}
    for name, body in _mapping(data, (section,), lines, f"instance name to {kind}").items():
        path = (section, name)
        body = _mapping(body, path, lines, "arguments (with 'class')")
        cls = body.get("class")
        if cls is None:
            raise lines.error(path, "missing 'class'")
        if cls not in table:
            raise lines.error(path + ("class",), f"unknown {kind} class {cls!r}{_closest(str(cls), table)}")
        spec = table[cls]
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
        cls = lr_scheduler_class(str(cls_name))
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
    kinds = [k for k in body if k in POLICY_KINDS]
    for key in body:
        if key in POLICY_REFUSED:
            raise lines.error(path + (key,), POLICY_REFUSED[key])
        if key not in (*POLICY_KINDS, "epochs", "starting_epoch", "ending_epoch", "frequency"):
            raise lines.error(path + (key,), f"unknown policy key; a policy has one of {', '.join(POLICY_KINDS)}, "
                              "and epochs or starting_epoch/ending_epoch/frequency")
    if len(kinds) != 1:
        raise lines.error(path, f"a policy names exactly one of: {', '.join(POLICY_KINDS)}")
    kind = kinds[0]
    ref = _mapping(body[kind], path + (kind,), lines, "instance_name")
    allowed_args = POLICY_ARGS.get(kind, {})
    for key in ref:
        if key == "args" and allowed_args:
            for arg, value in _mapping(ref["args"], path + (kind, "args"), lines, "policy arguments").items():
                if arg not in allowed_args:
                    raise lines.error(path + (kind, "args", arg), f"unknown {kind} policy argument"
                                      f"{_closest(str(arg), allowed_args)}")
                problem = allowed_args[arg](value)
                if problem:
                    raise lines.error(path + (kind, "args", arg), problem)
        elif key != "instance_name":
            raise lines.error(path + (kind, key), f"unknown key (only instance_name is supported; "
                              f"{f'{kind} policies take no args' if key == 'args' else 'typo?'})")
    if "instance_name" not in ref:
        raise lines.error(path + (kind,), "missing 'instance_name'")
    instance = ref["instance_name"]
    section = "lr_schedulers" if kind == "lr_scheduler" else kind + "s"
    known = getattr(schedule, section)
    if instance not in known:
        raise lines.error(path + (kind, "instance_name"),
                          f"no {kind} named {instance!r} in {section}{_closest(str(instance), known)}")
    policy = PolicySpec(kind, instance, args=dict(ref.get("args") or {}))
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
        if key in REFUSED:
            raise lines.error((key,), REFUSED[key])
        if key not in TOP_LEVEL:
            raise lines.error((key,), f"unknown top-level key{_closest(str(key), TOP_LEVEL)}")
    if data.get("version", 1) != 1:
        raise lines.error(("version",), f"only version 1 exists, got {data['version']!r}")
    schedule = Schedule(source=source, lines=lines.lines)
    for section in SECTIONS:
        if data.get(section) is not None:
            setattr(schedule, section, _parse_section(data[section], lines, section))
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


def strip_data_parallel(name: str) -> str:
    """A name without ``torch.nn.DataParallel``'s ``module.`` (leading, or ``.module.`` inside, as in
    Distiller's ``features.module.0.weight``)."""
    if name.startswith("module."):
        name = name[len("module."):]
    while ".module." in name:
        name = name.replace(".module.", ".", 1)
    return name


def _named_entries(schedule: Schedule, section: str, name: str, spec: PrunerSpec) -> list[tuple[tuple, str]]:
    """(key path, parameter name or glob) of every parameter a pruner/regularizer entry names."""
    if "weights" in spec.args:
        return [((section, name, "weights", i), w) for i, w in enumerate(spec.args["weights"])]
    key = next(k for k in ("levels", "thresholds", "sensitivities", "reg_regims") if k in spec.args)
    return [((section, name, key, w), w) for w in spec.args[key] if w != "*"]


def _closest_names(pattern: str, names: Sequence[str], n: int = 5) -> str:
    import difflib

    near = difflib.get_close_matches(pattern, names, n=n, cutoff=0.4)
    return f"; closest: {', '.join(near)}" if near else f"; the model has {len(names)} parameters"


def _resolve(schedule: Schedule, model: Any) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Per pruner/regularizer, its model parameter names; and every schedule name -> model name change."""
    from .metrics import prunable_parameters

    names = [n for n, _ in model.named_parameters()]
    prunable = [n for n, _ in prunable_parameters(model)]  # what globs match, as in pruners.py
    resolved: dict[str, list[str]] = {}
    renames: dict[str, str] = {}
    for section in ("pruners", "regularizers"):
        for pname, spec in getattr(schedule, section).items():
            found: list[str] = []
            for path, pattern in _named_entries(schedule, section, pname, spec):
                candidates = [pattern] + ([strip_data_parallel(pattern)] if pattern not in names else [])
                matched: list[str] = []
                for candidate in dict.fromkeys(candidates):
                    matched = [candidate] if candidate in names else match_params(candidate, prunable)
                    if matched:
                        if candidate != pattern:
                            renames[pattern] = candidate
                        break
                if not matched:
                    raise schedule.error(path, f"no parameter named {pattern!r} in the model"
                                         f"{_closest_names(strip_data_parallel(pattern), names)}")
                found.extend(m for m in matched if m not in found)
            resolved[pname] = found
    return resolved, renames


def resolve_weights(schedule: Schedule, model: Any) -> dict[str, list[str]]:
    """Check every parameter name in the pruners and regularizers against ``model.named_parameters()``.

    Exact names may name any parameter; globs match conv/linear weights only (``pruners`` rules).
    DataParallel prefixes are dropped when the name as written is not in the model. Returns, per
    pruner/regularizer, the resolved model names (``weights`` lists, or the keys of per-parameter
    mappings with ``'*'`` left as the default). Unknown names raise a ScheduleError at their line that
    lists the closest names.
    """
    return _resolve(schedule, model)[0]


def resolve_schedule(schedule: Schedule, model: Any) -> Schedule:
    """A copy of ``schedule`` whose parameter names are ``model``'s (DataParallel prefixes removed).

    ``renames`` of the copy lists each (schedule name, model name) pair that changed, to show the user.
    """
    import copy

    _, renames = _resolve(schedule, model)
    out = copy.deepcopy(schedule)
    out.renames = list(renames.items())
    for section in ("pruners", "regularizers"):
        for spec in getattr(out, section).values():
            for key, value in spec.args.items():
                if key == "weights":
                    spec.args[key] = [renames.get(w, w) for w in value]
                elif isinstance(value, dict) and key in ("levels", "thresholds", "sensitivities", "reg_regims"):
                    spec.args[key] = {renames.get(k, k): v for k, v in value.items()}
    return out


DISTILLER_DATASETS: dict[str, tuple[tuple[int, int, int], int]] = {  # name -> (input shape, classes)
    "cifar10": ((3, 32, 32), 10), "imagenet": ((3, 224, 224), 1000), "mnist": ((1, 28, 28), 10),
}


def check_extensions(schedule: Schedule, *, arch: str, dataset: str, input_shape: Sequence[int] | None = None,
                     num_classes: int | None = None) -> list[str]:
    """Check each extension's ``arch`` and ``dataset`` against the job; returns notes, raises on a mismatch.

    ``arch`` compares after Distiller aliases (``resnet20_cifar`` = ``resnet20-cifar``). ``dataset``
    matches by name, or a ``synthetic``/``imagefolder`` job whose input shape and class count are those
    of the named dataset stands in for it (noted).
    """
    from .names import canonical_model_name

    notes = []
    for name, spec in schedule.extensions.items():
        want, have = spec.args["arch"], arch
        if (canonical_model_name(want) or want) != (canonical_model_name(have) or have):
            raise schedule.error(("extensions", name, "arch"), f"the schedule is for arch {want!r}, the job's "
                                 f"model is {have!r}")
        want_ds = str(spec.args["dataset"]).lower()
        if want_ds == dataset.lower():
            continue
        shape, classes = DISTILLER_DATASETS.get(want_ds, (None, None))
        stands_in = (dataset in ("synthetic", "imagefolder") and shape is not None and input_shape is not None
                     and tuple(input_shape) == shape and num_classes == classes)
        if not stands_in:
            raise schedule.error(("extensions", name, "dataset"), f"the schedule is for dataset {want_ds!r}, the "
                                 f"job uses {dataset!r}" + (f" with input {tuple(input_shape)} and {num_classes} "
                                                            "classes" if input_shape is not None else ""))
        notes.append(f"extension {name!r}: dataset {dataset!r} {tuple(input_shape or ())} stands in for {want_ds!r}")
    return notes
