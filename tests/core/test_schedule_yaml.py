"""Keys given twice (issue 17): the same value is accepted with a located warning (PyYAML, which Distiller uses,
takes the last one silently); different values are an error that names both lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from pruning_core.schedule import ScheduleError, check_schedule, parse_schedule

SCHEDULE = """\
version: 1
pruners:
  p1:
    class: AutomatedGradualPruner
    initial_sparsity: 0.05
    final_sparsity: 0.5
    weights: [fc.weight]
    {again}
policies:
  - pruner:
      instance_name: p1
    starting_epoch: 0
    ending_epoch: 4
"""


def test_same_value_twice_is_a_warning_with_both_lines() -> None:
    schedule = parse_schedule(SCHEDULE.format(again="final_sparsity: 0.5"), source="s.yaml")
    assert schedule.pruners["p1"].args["final_sparsity"] == 0.5
    assert len(schedule.warnings) == 1
    warning = schedule.warnings[0]
    assert warning.startswith("s.yaml line 8: pruners.p1.final_sparsity:") and "lines 6 and 8" in warning
    answer = check_schedule(SCHEDULE.format(again="final_sparsity: 0.5"))
    assert answer["valid"] and answer["warnings"] and "lines 6 and 8" in answer["warnings"][0]


def test_same_list_twice_is_accepted() -> None:
    schedule = parse_schedule(SCHEDULE.format(again="weights: [fc.weight]"))
    assert schedule.pruners["p1"].args["weights"] == ["fc.weight"] and "lines 7 and 8" in schedule.warnings[0]


def test_different_values_are_an_error_naming_both_lines() -> None:
    with pytest.raises(ScheduleError) as err:
        parse_schedule(SCHEDULE.format(again="final_sparsity: 0.7"), source="s.yaml")
    assert err.value.key == "pruners.p1.final_sparsity" and err.value.line == 8
    assert "line 6: 0.5" in str(err.value) and "line 8: 0.7" in str(err.value)
    answer = check_schedule(SCHEDULE.format(again="final_sparsity: 0.7"))
    assert not answer["valid"] and answer["line"] == 8


def test_no_warning_without_repeats() -> None:
    assert parse_schedule(SCHEDULE.format(again="")).warnings == []
    assert check_schedule(SCHEDULE.format(again=""))["warnings"] == []


CORPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "distiller-schedules" / "corpus"


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"no corpus at {CORPUS}")
def test_distillers_ssl_channels_schedule_repeats_two_keys_with_the_same_value() -> None:
    schedule = parse_schedule((CORPUS / "examples__ssl__ssl_channels-removal_training.yaml").read_text(),
                              source="ssl.yaml")
    assert [w.split(": ")[1] for w in schedule.warnings] == [
        "regularizers.Channels_groups_regularizer.reg_regims.module.layer2.1.conv2.weight",
        "regularizers.Channels_groups_regularizer.reg_regims.module.layer3.1.conv2.weight"]
    assert all("given twice (lines" in w for w in schedule.warnings)
