"""Validating a schedule against the declared classes (declarations.py, lr_table.py): parse, check,
load, dump and write."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from ..declarations import (
    EXTENSION_CLASSES,
    PRUNER_CLASSES,
    REGULARIZER_CLASSES,
    PrunerClass,
    is_number,
    positive_int,
)
from ..lr_table import (
    LR_SCHEDULERS,
    LRArgumentError,
    LRSchedulerDeclaration,
    lr_scheduler_names,
)
from .errors import ScheduleError
from .loader import _compose, _Lines
from .spec import LRSchedulerSpec, PolicySpec, PrunerSpec, Schedule

Path_ = tuple  # a key path such as ("pruners", "p1", "weights", 2)


# --------------------------------------------------------------------------------------------------
# The class tables: declared torch-free in declarations.py (pruners, regularizers, extensions) and
# lr_table.py (lr schedulers), one declaration per class; the parser only reads them.
# --------------------------------------------------------------------------------------------------

_positive_int = positive_int

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
TOP_LEVEL = ("version", "pruners", "lr_schedulers", "regularizers", "extensions", "policies")


def _closest(word: str, options: Iterable[str]) -> str:
    import difflib

    options = list(options)
    near = difflib.get_close_matches(word, options, n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return f"{hint}; known: {', '.join(sorted(options))}" if options else hint


def lr_scheduler_class(name: str) -> type | None:
    """The torch class of an lr scheduler a schedule may name (:data:`LR_SCHEDULERS`); imports torch."""
    declaration = LR_SCHEDULERS.get(name)
    return declaration.impl() if declaration is not None else None


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
        broken = spec.relation(args) if spec.relation is not None else None
        if broken:
            raise lines.error(path + (broken[0],), broken[1])
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
        declaration = LR_SCHEDULERS.get(str(cls_name))
        if declaration is None:
            raise lines.error(path + ("class",), f"unknown or unsupported lr scheduler class {cls_name!r}"
                              f"{_closest(str(cls_name), lr_scheduler_names())}")
        accepted = declaration.argument_names()
        args = {k: v for k, v in body.items() if k != "class"}
        for key in args:
            if key not in accepted:
                raise lines.error(path + (key,), f"unknown argument for {cls_name}{_closest(str(key), accepted)}")
        for key in declaration.required:
            if key not in args:
                raise lines.error(path, f"{cls_name} needs '{key}'")
        _check_lr_arguments(declaration, args, path, lines)
        out[name] = LRSchedulerSpec(name, str(cls_name), args)
    return out


_PER_GROUP = ("min_lr", "base_momentum", "max_momentum")  # torch takes a float or one per param group


def _check_lr_arguments(declaration: LRSchedulerDeclaration, args: dict[str, Any], path: tuple,
                        lines: _Lines) -> None:
    """Refuse what torch's constructor would: a value of another kind than the argument's default, or one
    its checks reject (found by starting the torch-free stepper on a stand-in param group)."""
    for key, value in args.items():
        default = declaration.optional.get(key)
        if key in _PER_GROUP and isinstance(value, list):
            continue  # one value per param group (the stepper checks the count)
        kinds = (bool,) if isinstance(default, bool) else (int, float) if is_number(default) else \
            (str,) if isinstance(default, str) else None
        if kinds is not None and (not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool))):
            what = "true or false" if bool in kinds else "a number" if int in kinds else "a name"
            raise lines.error(path + (key,), f"must be {what} like its default {default!r}, got {value!r}")
    try:
        declaration.start({"lr": 0.1}, args)
    except LRArgumentError as exc:
        raise lines.error(path + ((exc.key,) if exc.key else ()), str(exc)) from None
    except (TypeError, ValueError, ZeroDivisionError, OverflowError) as exc:
        raise lines.error(path, f"{declaration.name} refuses these arguments: {exc}") from None


def _epoch_value(value: Any, path: tuple, lines: _Lines) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise lines.error(path, f"must be a non-negative integer epoch, got {value!r}")
    return value


def _policy_args(ref: dict, path: tuple, lines: _Lines, kind: str, instance: Any) -> dict[str, Any]:
    """A policy's ``args:``, checked against what the class of the instance it names declares it takes
    (``Declaration.policy_args``: pruners Distiller's PruningPolicy arguments, regularizers keep_mask)."""
    if "args" not in ref:
        return {}
    declaration = _declaration_of(kind, instance)
    accepted = declaration.policy_args if declaration is not None else {}
    if not accepted:
        raise lines.error(path + ("args",), f"{kind} policies take no args")
    args = _mapping(ref["args"], path + ("args",), lines, "policy arguments") if ref["args"] is not None else {}
    assert declaration is not None
    problem = declaration.policy_problem(args)
    if problem is not None:
        key, why = problem
        if why == "unknown":
            why = f"unknown {kind} policy argument for {declaration.name}{_closest(str(key), accepted)}"
        raise lines.error(path + ("args", key), why)
    return dict(args)


def _declaration_of(kind: str, instance: Any) -> PrunerClass | None:
    for section_kind, table in SECTIONS.values():
        if section_kind == kind:
            return table.get(instance.cls)
    return None


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
    for key in ref:
        if key not in ("instance_name", "args"):
            raise lines.error(path + (kind, key), "unknown key (a policy's entry has instance_name and, for "
                              "pruners and regularizers, args; typo?)")
    if "instance_name" not in ref:
        raise lines.error(path + (kind,), "missing 'instance_name'")
    instance = ref["instance_name"]
    section = "lr_schedulers" if kind == "lr_scheduler" else kind + "s"
    known = getattr(schedule, section)
    if instance not in known:
        raise lines.error(path + (kind, "instance_name"),
                          f"no {kind} named {instance!r} in {section}{_closest(str(instance), known)}")
    args = _policy_args(ref, path + (kind,), lines, kind, known[instance])
    policy = PolicySpec(kind, instance, args=args)
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
    schedule = Schedule(source=source, lines=lines.lines, warnings=lines.warnings)
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


def check_schedule(text: str, *, source: str = "schedule") -> dict[str, Any]:
    """The validation answer for a schedule text, as the API sends it: ``valid`` with the parsed
    ``schedule``, or ``valid: false`` with the ``error`` and where (``key``, ``line``). Torch-free, so the
    API answers it in its own process."""
    try:
        schedule = parse_schedule(text, source=source)
    except ScheduleError as exc:
        return {"valid": False, "error": str(exc), "key": exc.key or None, "line": exc.line}
    return {"valid": True, "schedule": schedule.to_dict(), "warnings": list(schedule.warnings)}


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
