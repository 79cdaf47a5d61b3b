"""Schedule parsing: Distiller's files, round trips, and located errors for malformed schedules."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from pruning_core.schedule import (
    ScheduleError,
    dump_schedule,
    load_schedule,
    parse_schedule,
    resolve_weights,
)

DISTILLER = Path(__file__).resolve().parents[3] / "shared" / "distiller-schedules"
if not DISTILLER.is_dir():  # the repo may sit elsewhere; the shared data lives at a fixed place
    DISTILLER = Path("/work/shared/distiller-schedules")

GOOD = """\
version: 1
pruners:
  agp:
    class: AutomatedGradualPruner
    initial_sparsity: 0.05
    final_sparsity: 0.8
    weights: [conv.weight, 'fc.*']
  filters:
    class: L1RankedStructureParameterPruner_AGP
    initial_sparsity: 0.1
    final_sparsity: 0.5
    group_type: Filters
    weights: conv.weight
  level:
    class: SparsityLevelParameterPruner
    levels: {conv.weight: 0.5, '*': 0.3}
lr_schedulers:
  lr:
    class: StepLR
    step_size: 2
    gamma: 0.5
policies:
  - pruner:
      instance_name: agp
    starting_epoch: 0
    ending_epoch: 8
    frequency: 2
  - pruner:
      instance_name: level
    epochs: [0, 3]
  - lr_scheduler:
      instance_name: lr
    starting_epoch: 0
    ending_epoch: 10
"""


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4, 2)


def test_good_schedule_parses_with_defaults() -> None:
    s = parse_schedule(GOOD)
    assert s.pruners["agp"].args["weights"] == ["conv.weight", "fc.*"]
    assert s.pruners["filters"].args["weights"] == ["conv.weight"]  # a single name becomes a list
    assert s.policies[0].active_epochs() == [0, 2, 4, 6]
    assert s.policies[1].active_epochs() == [0, 3]
    assert s.policies[2].frequency == 1
    assert s.last_epoch() == 9


def test_round_trip() -> None:
    s = parse_schedule(GOOD)
    again = parse_schedule(dump_schedule(s))
    assert again == s
    assert dump_schedule(again) == dump_schedule(s)


@pytest.mark.parametrize("name", sorted(p.name for p in DISTILLER.glob("*.yaml")) or ["(missing)"])
def test_distiller_files_parse_and_round_trip(name: str) -> None:
    if not (DISTILLER / name).is_file():
        pytest.skip(f"Distiller's schedules are not at {DISTILLER}")
    s = load_schedule(DISTILLER / name)
    assert s.policies and parse_schedule(dump_schedule(s)) == s


def test_regularizer_extension_sections_and_policy_args_are_parsed() -> None:
    text = GOOD.replace("policies:\n", "policies:\n  - regularizer: {instance_name: gl, args: {keep_mask: true}}\n"
                        "    starting_epoch: 0\n    ending_epoch: 4\n  - extension: {instance_name: thinner}\n"
                        "    epochs: [4]\n", 1) + """\
regularizers:
  gl:
    class: GroupLassoRegularizer
    reg_regims: {conv.weight: [0.0008, 3D], fc.weight: [0.001, Rows]}
    threshold_criteria: Mean_Abs
extensions:
  thinner: {class: FilterRemover, thinning_func_str: remove_filters, arch: resnet20_cifar, dataset: cifar10}
"""
    s = parse_schedule(text)
    assert s.regularizers["gl"].args["reg_regims"]["conv.weight"] == [0.0008, "3D"]
    assert s.policies[0].kind == "regularizer" and s.policies[0].args == {"keep_mask": True}
    assert s.extensions["thinner"].cls == "FilterRemover"
    assert parse_schedule(dump_schedule(s)) == s


def test_resolve_weights_globs_and_exact_names() -> None:
    s = parse_schedule(GOOD)
    resolved = resolve_weights(s, Tiny())
    assert resolved["agp"] == ["conv.weight", "fc.weight"]  # the glob skips fc.bias (not prunable)
    assert resolved["level"] == ["conv.weight"]


def test_unknown_weight_names_key_and_line() -> None:
    s = parse_schedule(GOOD.replace("weights: [conv.weight, 'fc.*']", "weights: [conv.weight,\n      conv2.weight]"))
    with pytest.raises(ScheduleError) as err:
        resolve_weights(s, Tiny())
    assert err.value.key == "pruners.agp.weights[1]" and err.value.line == 8
    assert "conv2.weight" in str(err.value)


def test_glob_matching_nothing_is_an_error() -> None:
    s = parse_schedule(GOOD.replace("'fc.*'", "'layer9.*'"))
    with pytest.raises(ScheduleError, match="layer9"):
        resolve_weights(s, Tiny())


def _edit(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new, 1)


# (case id, YAML text, expected key, expected line (a number, or text found first on that line), a word
# the message must contain)
MALFORMED = [
    ("bad yaml", "version: 1\npruners: [a, b\n", "", 3, "YAML"),
    ("empty", "", "", 1, "empty"),
    ("not a mapping", "- 1\n- 2\n", "", 1, "mapping"),
    ("unknown top-level key", GOOD + "extra: 1\n", "extra", "extra:", "unknown top-level"),
    ("quantizers section", GOOD + "quantizers:\n  q: {class: Q}\n", "quantizers", "quantizers:", "out of scope"),
    ("quantizer policy", _edit("  - lr_scheduler:", "  - quantizer:"), "policies[2].quantizer", "quantizer:",
     "out of scope"),
    ("unknown regularizer", "regularizers:\n  r: {class: L2Regularizer, reg_regims: {a: 1}}\n" + GOOD,
     "regularizers.r.class", "L2Regularizer", "L1Regularizer"),
    ("bad group lasso regim", "regularizers:\n  r:\n    class: GroupLassoRegularizer\n"
     "    reg_regims: {conv.weight: [0.1, Kernels]}\n" + GOOD, "regularizers.r.reg_regims", "reg_regims", "Filters"),
    ("bad thinning func", "extensions:\n  t:\n    class: FilterRemover\n    thinning_func_str: remove_rows\n"
     "    arch: a\n    dataset: d\n" + GOOD, "extensions.t.thinning_func_str", "remove_rows", "remove_filters"),
    ("missing extension arch", "extensions:\n  t: {class: FilterRemover, thinning_func_str: remove_filters, "
     "dataset: d}\n" + GOOD, "extensions.t", "t: {", "arch"),
    ("bad block shape", _edit("group_type: Filters", "group_type: Blocks\n    kwargs: {block_shape: [1, 4, 3, 3]}"),
     "pruners.filters.kwargs", "block_shape", "1 x 1"),
    ("bad group dependency", _edit("group_type: Filters", "group_type: Filters\n    group_dependency: Follower"),
     "pruners.filters.group_dependency", "Follower", "Leader"),
    ("version 2", _edit("version: 1", "version: 2"), "version", 1, "version 1"),
    ("unknown class", _edit("class: AutomatedGradualPruner", "class: AutoGradualPruner"), "pruners.agp.class",
     "AutoGradual",
     "AutomatedGradualPruner"),
    ("missing class", _edit("    class: SparsityLevelParameterPruner\n", ""), "pruners.level", "  level:", "class"),
    ("unknown argument", _edit("    initial_sparsity: 0.05\n", "    initial_sparsity: 0.05\n    final: 1\n"),
     "pruners.agp.final", "final: 1", "unknown argument"),
    ("missing argument", _edit("    final_sparsity: 0.8\n", ""), "pruners.agp", "  agp:", "final_sparsity"),
    ("negative sparsity", _edit("initial_sparsity: 0.05", "initial_sparsity: -0.1"),
     "pruners.agp.initial_sparsity", "-0.1", "[0, 1)"),
    ("sparsity above 1", _edit("final_sparsity: 0.8", "final_sparsity: 1.5"), "pruners.agp.final_sparsity", "1.5",
     "[0, 1)"),
    ("final below initial", _edit("final_sparsity: 0.8", "final_sparsity: 0.01"), "pruners.agp.final_sparsity",
     "0.01", "greater"),
    ("sparsity not a number", _edit("levels: {conv.weight: 0.5", "levels: {conv.weight: high"),
     "pruners.level.levels", "high", "number"),
    ("bad group_type", _edit("group_type: Filters", "group_type: Kernels"), "pruners.filters.group_type", "Kernels",
     "Filters"),
    ("empty weights", _edit("weights: conv.weight", "weights: []"), "pruners.filters.weights", "[]", "non-empty"),
    ("unknown lr class", _edit("class: StepLR", "class: StepLRR"), "lr_schedulers.lr.class", "StepLRR", "StepLR"),
    ("unknown lr argument", _edit("step_size: 2", "step_sise: 2"), "lr_schedulers.lr.step_sise", "step_sise",
     "step_size"),
    ("missing lr argument", _edit("    step_size: 2\n", ""), "lr_schedulers.lr", "  lr:", "step_size"),
    ("lambda lr unsupported", _edit("class: StepLR", "class: LambdaLR"), "lr_schedulers.lr.class", "LambdaLR",
     "unsupported"),
    ("ending before starting", _edit("ending_epoch: 8", "ending_epoch: 0"), "policies[0].ending_epoch",
     "ending_epoch: 0",
     "before it starts"),
    ("zero frequency", _edit("frequency: 2", "frequency: 0"), "policies[0].frequency", "frequency: 0", "positive"),
    ("negative epoch", _edit("epochs: [0, 3]", "epochs: [0, -3]"), "policies[1].epochs[1]", "-3", "non-negative"),
    ("missing instance_name", _edit("      instance_name: level\n", "      name: level\n"),
     "policies[1].pruner.name", "name: level", "unknown key"),
    ("unknown pruner instance", _edit("instance_name: level", "instance_name: levels"),
     "policies[1].pruner.instance_name", "instance_name: levels", "no pruner named 'levels'"),
    ("unknown lr instance", _edit("instance_name: lr\n", "instance_name: lr2\n"),
     "policies[2].lr_scheduler.instance_name", "lr2", "no lr_scheduler"),
    ("regularizer policy without regularizer", _edit("  - lr_scheduler:", "  - regularizer:"),
     "policies[2].regularizer.instance_name", 32, "no regularizer named"),
    ("unknown pruner policy arg", _edit("instance_name: level\n",
                                        "instance_name: level\n      args: {keep_masks: true}\n"),
     "policies[1].pruner.args.keep_masks", "args:", "did you mean 'keep_mask'"),
    ("gradient mask without forward-only", _edit("instance_name: level\n",
                                                 "instance_name: level\n      args: {mask_gradients: true}\n"),
     "policies[1].pruner.args.mask_gradients", "args:", "needs mask_on_forward_only"),
    ("lr policy args", _edit("      instance_name: lr\n", "      instance_name: lr\n      args: {keep_mask: true}\n"),
     "policies[2].lr_scheduler.args", "args:", "take no args"),
    ("unknown policy key", _edit("    frequency: 2\n", "    frequency: 2\n    every: 3\n"), "policies[0].every",
     "every",
     "unknown policy key"),
    ("missing starting_epoch", _edit("    starting_epoch: 0\n    ending_epoch: 8\n", "    ending_epoch: 8\n"),
     "policies[0]", "- pruner:", "starting_epoch"),
    ("AGP span zero", _edit("ending_epoch: 8\n    frequency: 2", "ending_epoch: 2\n    frequency: 2"),
     "policies[0].ending_epoch", "ending_epoch: 2", "span"),
    ("AGP with epochs list", _edit("instance_name: level", "instance_name: agp"), "policies[1].epochs",
     "epochs: [0, 3]",
     "starting_epoch"),
    ("duplicate key", _edit("    gamma: 0.5\n", "    gamma: 0.5\n    gamma: 0.1\n"), "lr_schedulers.lr.gamma",
     "gamma: 0.1",
     "twice"),
    ("missing policies", GOOD.split("policies:")[0], "", 1, "policies"),
]


@pytest.mark.parametrize("text, key, line, word", [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_malformed_schedule_names_key_and_line(text: str, key: str, line: int | str, word: str) -> None:
    if isinstance(line, str):
        line = next(i for i, row in enumerate(text.splitlines(), 1) if line in row)
    with pytest.raises(ScheduleError) as err:
        parse_schedule(text, source="s.yaml")
    e = err.value
    assert (e.key, e.line) == (key, line), str(e)
    assert word in str(e)
    assert str(e).startswith(f"s.yaml line {line}: ")
    assert isinstance(e, ValueError)  # the CLI prints ValueErrors as one clean line
