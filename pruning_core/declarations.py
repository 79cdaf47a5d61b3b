"""What each schedule class accepts and how it behaves, declared once and torch-free.

A schedule names pruner, regularizer and extension classes (Distiller's names). Each has ONE
:class:`Declaration` here: its arguments (a checker per argument, the defaults of the optional ones),
what it prunes (``element``, ``structures`` or ``nm``), how its level comes about (``gradual`` = the
AGP curve, ``fixed`` = an argument, ``threshold`` = decided by the weights, ``random`` = a draw) and
where its torch implementation lives (``impl``, imported only when a pruner is built). The parser
validates with these declarations, the preview walks a schedule with them and the scheduler builds
the implementation from them, so the API validates and previews without importing torch; a test
keeps every implementation's ``__init__`` signature equal to its declaration.
"""

from __future__ import annotations

import fnmatch
import importlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

from pruning_core.groups import RANKED_GROUP_TYPES, REGULARIZER_GROUP_TYPES

V = TypeVar("V")

Checker = Callable[[Any], str | None]  # returns an error message, or None when the value is fine
Structure = Literal["element", "structures", "nm"]
Behaviour = Literal["gradual", "fixed", "threshold", "random"]

# Distiller's ranked-structure and Group Lasso group types: pruning_core.groups defines what each one is.
GROUP_TYPES = RANKED_GROUP_TYPES
THRESHOLD_CRITERIA = ("Mean_Abs", "Max")
THINNING_FUNCS = ("remove_filters", "remove_channels")


# --------------------------------------------------------------------------------------------------
# Argument checkers (one per kind of value)
# --------------------------------------------------------------------------------------------------


def is_number(v: Any) -> bool:
    """A finite int or float, not a bool (YAML's ``true`` is no sparsity)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def fraction(v: Any) -> str | None:
    if not is_number(v):
        return f"must be a number, got {v!r}"
    if not 0.0 <= v < 1.0:
        return f"must be a sparsity in [0, 1), got {v}"
    return None


def non_negative_int(v: Any) -> str | None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        return f"must be a non-negative integer, got {v!r}"
    return None


def non_negative(v: Any) -> str | None:
    if not is_number(v) or v < 0:
        return f"must be a non-negative number, got {v!r}"
    return None


def positive_int(v: Any) -> str | None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        return f"must be a positive integer, got {v!r}"
    return None


def integer(v: Any) -> str | None:
    if isinstance(v, bool) or not isinstance(v, int):
        return f"must be an integer, got {v!r}"
    return None


def one_of(options: Sequence[str]) -> Checker:
    def check(v: Any) -> str | None:
        return None if v in options else f"must be one of {', '.join(options)}, got {v!r}"
    return check


def boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else f"must be true or false, got {v!r}"


def text(v: Any) -> str | None:
    return None if isinstance(v, str) and v else f"must be a name, got {v!r}"


def weights(v: Any) -> str | None:
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not items:
        return "must be a parameter name or a non-empty list of names (globs allowed)"
    for item in items:
        if not isinstance(item, str) or not item:
            return f"must hold parameter names, got {item!r}"
    return None


def per_param(value_check: Checker) -> Checker:
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


def sparsity_range(v: Any) -> str | None:
    if not (isinstance(v, list) and len(v) == 2 and all(fraction(x) is None for x in v) and v[0] <= v[1]):
        return f"must be [low, high] sparsities with 0 <= low <= high < 1, got {v!r}"
    return None


def block_kwargs(v: Any) -> str | None:
    shape = v.get("block_shape") if isinstance(v, dict) else None
    if not isinstance(v, dict) or set(v) != {"block_shape"}:
        return f"must be {{block_shape: [repetitions, depth, 1, 1]}}, got {v!r}"
    if not (isinstance(shape, list) and len(shape) == 4 and all(positive_int(x) is None for x in shape)):
        return f"block_shape must be 4 positive integers [repetitions, depth, height, width], got {shape!r}"
    if shape[2:] != [1, 1]:
        return f"only block shapes repetitions x depth x 1 x 1 are supported (as Distiller), got {shape}"
    return None


def group_regim(v: Any) -> str | None:
    if not (isinstance(v, list) and len(v) == 2 and non_negative(v[0]) is None):
        return f"must be [strength, group type] (e.g. [0.0008, Filters]), got {v!r}"
    return one_of(REGULARIZER_GROUP_TYPES)(v[1])


# --------------------------------------------------------------------------------------------------
# Rules: which setting of a per-parameter mapping applies to a parameter
# --------------------------------------------------------------------------------------------------


def is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def rule_for(rules: Mapping[str, V], name: str) -> V | None:
    """The setting ``rules`` gives parameter ``name``: its exact entry, else the first glob that matches
    (in the given order, ``'*'`` last as the default), else None. The pruners match with this too."""
    if name in rules:
        return rules[name]
    globs = [p for p in rules if is_glob(p) and p != "*"] + (["*"] if "*" in rules else [])
    for pattern in globs:
        if fnmatch.fnmatchcase(name, pattern):
            return rules[pattern]
    return None


def agp_sparsity(initial: float, final: float, epoch: int, starting_epoch: int, ending_epoch: int,
                 frequency: int = 1) -> float:
    """Distiller's AGP target sparsity at ``epoch``; epochs outside the span are clamped to it."""
    span = ((ending_epoch - starting_epoch - 1) // frequency) * frequency
    if span <= 0:
        raise ValueError(f"AGP span is {span} for epochs {starting_epoch}..{ending_epoch} every {frequency}: "
                         "it needs at least two pruning epochs")
    progress = min(max(epoch - starting_epoch, 0), span) / span
    return final + (initial - final) * (1.0 - progress) ** 3


# --------------------------------------------------------------------------------------------------
# The declaration
# --------------------------------------------------------------------------------------------------

# --------------------------------------------------------------------------------------------------
# Policy arguments: what a policy that names an instance may add under ``args:`` (Distiller's PruningPolicy
# ``pruner_args`` and RegularizationPolicy ``keep_mask``). Each class declares the ones it takes
# (``Declaration.policy_args``); the parser checks them and the scheduler reads them with
# ``Declaration.policy_settings``, so their names, checks and defaults are written here only.
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyArgument:
    """One ``args:`` key of a policy: its checker, its default (what an absent key means) and why it exists."""

    check: Checker
    default: Any
    doc: str


_KEEP_MASK = "on the policy's last epoch the masks it set become permanent (pruned weights stay zero afterwards)"
REGULARIZATION_POLICY: dict[str, PolicyArgument] = {
    "keep_mask": PolicyArgument(boolean, False, _KEEP_MASK + ": what the regularizer's threshold zeroed"),
}
PRUNING_POLICY: dict[str, PolicyArgument] = {
    "keep_mask": PolicyArgument(boolean, False, _KEEP_MASK + " (with mask_on_forward_only: from then on masked "
                                "after every step too)"),
    "mini_batch_pruning_frequency": PolicyArgument(
        non_negative_int, 0, "also prune every N training minibatches (counted over the epochs, as Distiller's "
        "global minibatch id), not only at the epoch's start; 0 = epoch starts only"),
    "mask_on_forward_only": PolicyArgument(
        boolean, False, "dynamic network surgery (Guo et al. 2016): the mask is applied before each forward pass "
        "only, so pruned weights keep their gradients and a pruner may splice them back"),
    "mask_gradients": PolicyArgument(
        boolean, False, "with mask_on_forward_only: pruned weights get no gradient (their values are kept)"),
    "use_double_copies": PolicyArgument(
        boolean, False, "with mask_on_forward_only: the forward pass sees the masked weights, the optimizer updates "
        "the dense copy (restored before each step)"),
    "discard_masks_at_minibatch_end": PolicyArgument(
        boolean, False, "forget this policy's masks after each optimizer step (DropFilter-like training: a mask "
        "lives for one minibatch)"),
    "fold_batchnorm": PolicyArgument(
        boolean, False, "rank a conv's weights multiplied by the following BatchNorm's gamma / sqrt(running_var "
        "+ eps) (its inference-time folding); the mask applies to the conv's own weights"),
}


def _forward_only_needed(settings: Mapping[str, Any]) -> tuple[str, str] | None:
    for key in ("mask_gradients", "use_double_copies"):
        if settings.get(key) and not settings.get("mask_on_forward_only"):
            return key, "needs mask_on_forward_only: true (masks re-applied after every step leave no dense copy " \
                        "and no gradient to mask)"
    return None


Level = Callable[[Mapping[str, Any], str], float]  # (the entry's arguments, a parameter name) -> its level
SharedLevel = Callable[[Mapping[str, Any]], "float | None"]
#: a rule between arguments: (the argument to blame, why) when broken, else None
Relation = Callable[[Mapping[str, Any]], "tuple[str, str] | None"]


def _agp_rising(args: Mapping[str, Any]) -> tuple[str, str] | None:
    if args["final_sparsity"] > args["initial_sparsity"]:
        return None
    return "final_sparsity", "must be greater than initial_sparsity"


def _blocks_shaped(args: Mapping[str, Any]) -> tuple[str, str] | None:
    if args.get("group_type") != "Blocks" or args.get("kwargs"):
        return None
    return "group_type", "Blocks needs kwargs: {block_shape: [repetitions, depth, 1, 1]}"


def _ranked_agp(args: Mapping[str, Any]) -> tuple[str, str] | None:
    return _agp_rising(args) or _blocks_shaped(args)


def _splice_order(args: Mapping[str, Any]) -> tuple[str, str] | None:
    if args["low_thresh_mult"] <= args["hi_thresh_mult"]:
        return None
    low, high = args["low_thresh_mult"], args["hi_thresh_mult"]
    return "hi_thresh_mult", f"must be at least low_thresh_mult ({low}), got {high}"


def _n_of_m(args: Mapping[str, Any]) -> tuple[str, str] | None:
    return None if args["n"] <= args["m"] else ("n", f"must be at most m ({args['m']}) in N:M, got {args['n']}")


@dataclass(frozen=True)
class Declaration:
    """One schedule class: its arguments, its behaviour, and where its implementation is.

    ``required``/``optional`` map argument names to checkers; ``defaults`` are the optional ones'
    defaults (what the implementation's ``__init__`` uses). ``impl_path`` is ``"module:Class"``.
    """

    name: str
    required: Mapping[str, Checker]
    optional: Mapping[str, Checker] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    impl_path: str | None = None
    structure: Structure = "element"
    behaviour: Behaviour = "fixed"
    #: gets ``set_epoch(epoch, start, end, freq)`` before each prune (AGP, Splicing's growing sensitivity)
    epoch_aware: bool = False
    #: the level a ``fixed`` pruner gives one parameter
    level: Level | None = None
    #: the level all its parameters share, None when it differs per parameter
    shared_level: SharedLevel | None = None
    #: a rule between its arguments, checked by the parser after each argument's own checker
    relation: Relation | None = None
    #: the ``args:`` a policy naming an instance of this class may give (PRUNING_POLICY, REGULARIZATION_POLICY)
    policy_args: Mapping[str, PolicyArgument] = field(default_factory=dict)
    #: needs per-channel activation statistics from forward passes (ranks filters by what they output)
    activation_statistic: str | None = None

    @property
    def agp(self) -> bool:
        """Its sparsity follows the AGP curve over the policy's epochs."""
        return self.behaviour == "gradual"

    def argument_names(self) -> list[str]:
        return [*self.required, *self.optional]

    def policy_problem(self, args: Mapping[str, Any]) -> tuple[str, str] | None:
        """(argument, why) for the first policy argument this class does not take or whose value is wrong."""
        for key, value in args.items():
            if key not in self.policy_args:
                return key, "unknown"
            problem = self.policy_args[key].check(value)
            if problem:
                return key, problem
        return _forward_only_needed(args) if self.policy_args is PRUNING_POLICY else None

    def policy_settings(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """Every policy argument of this class: the given value, else its declared default."""
        return {key: args.get(key, arg.default) for key, arg in self.policy_args.items()}

    def impl(self) -> type:
        """The torch implementation class (imported now, so only code that prunes pays for torch)."""
        if self.impl_path is None:
            raise TypeError(f"{self.name} has no implementation class of its own")
        module, _, attr = self.impl_path.partition(":")
        return getattr(importlib.import_module(module), attr)

    def build(self, args: Mapping[str, Any]) -> Any:
        """An implementation instance with the schedule entry's arguments."""
        return self.impl()(**args)

    def target(self, args: Mapping[str, Any], name: str, epoch: int, span: tuple[int, int, int]) -> float | None:
        """Parameter ``name``'s level at ``epoch`` of a policy with ``span``, when the arguments decide it
        (gradual and fixed pruners); None for threshold rules (the weights decide) and random draws."""
        if self.behaviour == "gradual":
            return agp_sparsity(args["initial_sparsity"], args["final_sparsity"], epoch, *span)
        if self.behaviour == "fixed" and self.level is not None:
            return float(self.level(args, name))
        return None


PrunerClass = Declaration  # the parser's older name


def _levels_of(key: str) -> SharedLevel:
    def shared(args: Mapping[str, Any]) -> float | None:
        value = args[key]
        levels = {v for v in (value.values() if isinstance(value, Mapping) else [value]) if is_number(v)}
        return float(levels.pop()) if len(levels) == 1 else None
    return shared


def channels_regim(v: Any) -> str | None:
    if not (isinstance(v, list) and len(v) == 2 and non_negative(v[0]) is None):
        return f"must be [strength, Channels] (e.g. [0.000008, Channels]), got {v!r}"
    return one_of(("Channels",))(v[1])


FILTER_GROUP_TYPES = ("Filters", "3D")  # what the activation and Bernoulli filter pruners take (Distiller's asserts)
_RANKED_OPTIONS: dict[str, Checker] = {"group_dependency": one_of(("Leader",)), "kwargs": block_kwargs}
_LEADER: dict[str, Checker] = {"group_dependency": one_of(("Leader",))}
_RANKED_DEFAULTS = {"group_dependency": None, "kwargs": None}
_PRUNERS = "pruning_core.pruners:"
_AGP = "pruning_core.agp:"

PRUNER_CLASSES: dict[str, Declaration] = {d.name: d for d in (
    Declaration("AutomatedGradualPruner",
                {"initial_sparsity": fraction, "final_sparsity": fraction, "weights": weights},
                impl_path=_AGP + "AutomatedGradualPruner", behaviour="gradual", epoch_aware=True, relation=_agp_rising),
    Declaration("L1RankedStructureParameterPruner_AGP",
                {"initial_sparsity": fraction, "final_sparsity": fraction, "group_type": one_of(GROUP_TYPES),
                 "weights": weights}, _RANKED_OPTIONS, _RANKED_DEFAULTS,
                impl_path=_AGP + "L1RankedStructureParameterPruner_AGP", structure="structures",
                behaviour="gradual", epoch_aware=True, relation=_ranked_agp),
    Declaration("SparsityLevelParameterPruner", {"levels": per_param(fraction)},
                impl_path=_PRUNERS + "SparsityLevelParameterPruner",
                level=lambda a, n: rule_for(a["levels"], n), shared_level=_levels_of("levels")),  # type: ignore
    Declaration("MagnitudeParameterPruner", {"thresholds": per_param(non_negative)},
                impl_path=_PRUNERS + "MagnitudeParameterPruner", behaviour="threshold"),
    Declaration("SensitivityPruner", {"sensitivities": per_param(non_negative)},
                impl_path=_PRUNERS + "SensitivityPruner", behaviour="threshold"),
    Declaration("L1RankedStructureParameterPruner",
                {"group_type": one_of(GROUP_TYPES), "desired_sparsity": fraction, "weights": weights},
                _RANKED_OPTIONS, _RANKED_DEFAULTS, impl_path=_PRUNERS + "L1RankedStructureParameterPruner",
                structure="structures", level=lambda a, n: a["desired_sparsity"],
                shared_level=_levels_of("desired_sparsity"), relation=_blocks_shaped),
    Declaration("RandomLevelStructureParameterPruner",
                {"group_type": one_of(GROUP_TYPES), "sparsity_range": sparsity_range, "weights": weights},
                {**_RANKED_OPTIONS, "seed": integer}, {**_RANKED_DEFAULTS, "seed": 0},
                impl_path=_PRUNERS + "RandomLevelStructureParameterPruner", structure="structures",
                behaviour="random", relation=_blocks_shaped),
    Declaration("SplicingPruner",
                {"sensitivities": per_param(non_negative), "low_thresh_mult": non_negative,
                 "hi_thresh_mult": non_negative}, {"sensitivity_multiplier": non_negative},
                {"sensitivity_multiplier": 0.0}, impl_path=_PRUNERS + "SplicingPruner", behaviour="threshold",
                epoch_aware=True, relation=_splice_order),
    Declaration("NMStructuredPruner", {"n": positive_int, "m": positive_int, "weights": weights},
                impl_path=_PRUNERS + "NMStructuredPruner", structure="nm", level=lambda a, n: 1.0 - a["n"] / a["m"],
                relation=_n_of_m),
    Declaration("RandomPruner", {"level": fraction, "weights": weights}, {"seed": integer}, {"seed": 0},
                impl_path=_PRUNERS + "RandomPruner", level=lambda a, n: a["level"], shared_level=_levels_of("level")),
    *(Declaration(f"Activation{kind}RankedFilterPruner",
                  {"group_type": one_of(FILTER_GROUP_TYPES), "desired_sparsity": fraction, "weights": weights},
                  _LEADER, {"group_dependency": None}, impl_path=_PRUNERS + f"Activation{kind}RankedFilterPruner",
                  structure="structures", level=lambda a, n: a["desired_sparsity"],
                  shared_level=_levels_of("desired_sparsity"), activation_statistic=statistic)
      for kind, statistic in (("APoZ", "apoz"), ("Mean", "mean"))),
    *(Declaration(f"Activation{kind}RankedFilterPruner_AGP",
                  {"initial_sparsity": fraction, "final_sparsity": fraction, "group_type": one_of(FILTER_GROUP_TYPES),
                   "weights": weights}, _LEADER, {"group_dependency": None},
                  impl_path=_AGP + f"Activation{kind}RankedFilterPruner_AGP", structure="structures",
                  behaviour="gradual", epoch_aware=True, relation=_agp_rising, activation_statistic=statistic)
      for kind, statistic in (("APoZ", "apoz"), ("Mean", "mean"))),
    # a random draw per filter: the AGP form's level is the drop probability, so its curve is the expectation
    Declaration("BernoulliFilterPruner",
                {"group_type": one_of(FILTER_GROUP_TYPES), "desired_sparsity": fraction, "weights": weights},
                {**_LEADER, "seed": integer}, {"group_dependency": None, "seed": 0},
                impl_path=_PRUNERS + "BernoulliFilterPruner", structure="structures", behaviour="random"),
    Declaration("BernoulliFilterPruner_AGP",
                {"initial_sparsity": fraction, "final_sparsity": fraction, "group_type": one_of(FILTER_GROUP_TYPES),
                 "weights": weights}, {**_LEADER, "seed": integer}, {"group_dependency": None, "seed": 0},
                impl_path=_AGP + "BernoulliFilterPruner_AGP", structure="structures", behaviour="gradual",
                epoch_aware=True, relation=_agp_rising),
    Declaration("BaiduRNNPruner",
                {"q": non_negative, "ramp_epoch_offset": non_negative_int, "ramp_slope_mult": non_negative,
                 "weights": weights}, impl_path=_PRUNERS + "BaiduRNNPruner", behaviour="threshold", epoch_aware=True),
)}
PRUNER_CLASSES = {name: replace(d, policy_args=PRUNING_POLICY) for name, d in PRUNER_CLASSES.items()}

_CRITERIA = {"threshold_criteria": one_of(THRESHOLD_CRITERIA)}
REGULARIZER_CLASSES: dict[str, Declaration] = {d.name: d for d in (
    Declaration("GroupLassoRegularizer", {"reg_regims": per_param(group_regim)}, _CRITERIA,
                {"threshold_criteria": None}, impl_path="pruning_core.regularizers:GroupLassoRegularizer",
                structure="structures"),
    Declaration("L1Regularizer", {"reg_regims": per_param(non_negative)}, _CRITERIA,
                {"threshold_criteria": None}, impl_path="pruning_core.regularizers:L1Regularizer"),
    Declaration("GroupVarianceRegularizer", {"reg_regims": per_param(channels_regim)},
                impl_path="pruning_core.regularizers:GroupVarianceRegularizer", structure="structures"),
)}
REGULARIZER_CLASSES = {name: replace(d, policy_args=REGULARIZATION_POLICY) for name, d in REGULARIZER_CLASSES.items()}

# Distiller's thinning extensions: all three are one StructureRemover whose function decides. prunescope
# thins with Torch-Pruning (dead filters and channels both; the scheduler calls it): no class of their own.
EXTENSION_CLASSES: dict[str, Declaration] = {name: Declaration(
    name, {"thinning_func_str": one_of(THINNING_FUNCS), "arch": text, "dataset": text}, structure="structures")
    for name in ("FilterRemover", "ChannelRemover", "StructureRemover")}
