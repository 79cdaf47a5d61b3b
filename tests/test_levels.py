import re

import pytest

from pruning_core.levels import parse_levels


def test_range_excludes_stop_like_distiller():
    levels = parse_levels("0:0.95:0.05")
    assert len(levels) == 19
    assert levels[0] == 0.0 and levels[-1] == 0.9
    assert levels[6] == 0.3  # rounded, not 0.30000000000000004


def test_comma_list_and_sequence():
    assert parse_levels("0, 0.5,0.9") == [0.0, 0.5, 0.9]
    assert parse_levels([0.1, 0.2]) == [0.1, 0.2]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("0:1", "start:stop:step"),
        ("0:0.9:0", "step must be positive"),
        ("0,abc", "not a number"),
        ("0,1.5", "outside [0, 1)"),
        ("0.5,0.5", "repeat"),
        ("", "no level"),
    ],
)
def test_bad_levels_say_what_is_wrong(spec, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_levels(spec)
