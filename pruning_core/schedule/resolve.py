"""Resolving a schedule's parameter names and globs against a model's names (DataParallel prefixes
removed and recorded as renames)."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any

from .spec import PrunerSpec, Schedule

Path_ = tuple  # a key path such as ("pruners", "p1", "weights", 2)


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


def model_parameter_names(model: Any) -> tuple[list[str], list[str]]:
    """``model``'s parameter names, in order, and the prunable ones among them (what globs match)."""
    from ..metrics import prunable_parameters

    return [n for n, _ in model.named_parameters()], [n for n, _ in prunable_parameters(model)]


def _resolve(schedule: Schedule, names: Sequence[str], prunable: Sequence[str]
             ) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Per pruner/regularizer, its model parameter names; and every schedule name -> model name change."""
    resolved: dict[str, list[str]] = {}
    renames: dict[str, str] = {}
    known = set(names)
    for section in ("pruners", "regularizers"):
        for pname, spec in getattr(schedule, section).items():
            found: list[str] = []
            for path, pattern in _named_entries(schedule, section, pname, spec):
                candidates = [pattern] + ([strip_data_parallel(pattern)] if pattern not in known else [])
                matched: list[str] = []
                for candidate in dict.fromkeys(candidates):
                    matched = [candidate] if candidate in known else match_params(candidate, prunable)
                    if matched:
                        if candidate != pattern:
                            renames[pattern] = candidate
                        break
                if not matched:
                    raise schedule.error(path, f"no parameter named {pattern!r} in the model"
                                         f"{_closest_names(strip_data_parallel(pattern), list(names))}")
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
    return _resolve(schedule, *model_parameter_names(model))[0]


def resolve_schedule(schedule: Schedule, model: Any) -> Schedule:
    """A copy of ``schedule`` whose parameter names are ``model``'s (DataParallel prefixes removed).

    ``renames`` of the copy lists each (schedule name, model name) pair that changed, to show the user.
    """
    return resolve_names(schedule, *model_parameter_names(model))[0]


def resolve_names(schedule: Schedule, names: Sequence[str], prunable: Sequence[str]
                  ) -> tuple[Schedule, dict[str, list[str]]]:
    """:func:`resolve_schedule` and :func:`resolve_weights` on parameter names alone (torch-free): ``names``
    are all of a model's parameter names, ``prunable`` those that globs match (conv/linear weights).
    Returns the resolved copy (with ``renames``) and, per pruner/regularizer, its model names."""
    import copy

    weights, renames = _resolve(schedule, names, prunable)
    out = copy.deepcopy(schedule)
    out.renames = list(renames.items())
    for section in ("pruners", "regularizers"):
        for spec in getattr(out, section).values():
            for key, value in spec.args.items():
                if key == "weights":
                    spec.args[key] = [renames.get(w, w) for w in value]
                elif isinstance(value, dict) and key in ("levels", "thresholds", "sensitivities", "reg_regims"):
                    spec.args[key] = {renames.get(k, k): v for k, v in value.items()}
    return out, weights
