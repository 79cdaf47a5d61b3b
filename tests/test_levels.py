import re

import pytest

from pruning_core.levels import DEFAULT_LEVELS, check_level_count, parse_levels
from pruning_core.limits import Limits


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


# -- bounds (issue 13): a levels text is measured before any level is made -----------------------


def test_default_levels_are_distillers_nineteen() -> None:
    assert parse_levels(DEFAULT_LEVELS) == parse_levels("0:0.95:0.05") and len(parse_levels(DEFAULT_LEVELS)) == 19


@pytest.mark.parametrize(
    "spec, message",
    [
        ("0:0.5:1e-12", "below the minimum step 0.0001"),  # once froze the server: a trillion levels
        ("0:1:0.000001", "below the minimum step 0.0001"),  # once a 201 with a million stored levels
        ("0:0.5:0.0001", "5000 levels is more than the limit of 1000"),
        ("0:1e300:0.1", "more than the limit of 1000"),
        ("0:nan:0.1", "finite"),  # nan never compares >= stop: the old loop never ended
        ("0:inf:0.1", "finite"),
        ("-inf:0.5:0.1", "finite"),
        ("0:1:x", "must be numbers"),
        (",".join(["0.1"] * 1001), "1001 levels is more than the limit of 1000"),
        ("0," * 20_000, "longer than the limit of 20000"),
    ],
)
def test_levels_beyond_the_limits_are_refused_by_count(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_levels(spec)


def test_the_limits_are_parameters_and_a_range_is_counted_exactly_at_the_edge() -> None:
    tight = Limits(max_levels=10, min_level_step=0.01)
    assert len(parse_levels("0:1:0.1", tight)) == 10  # exactly the limit is allowed
    with pytest.raises(ValueError, match="11 levels is more than the limit of 10"):
        parse_levels("0:1:0.095", tight)  # 0, 0.095, ..., 0.95
    with pytest.raises(ValueError, match="minimum step 0.01"):
        parse_levels("0:0.5:0.005", tight)
    assert len(parse_levels("0:1:0.001")) == 1000  # the default limit, reached exactly
    with pytest.raises(ValueError, match="1001 levels"):
        check_level_count(1001)


def test_errors_quote_a_short_prefix_of_the_input() -> None:
    with pytest.raises(ValueError) as err:
        parse_levels("0,0.5," + "x" * 10_000)
    assert len(str(err.value)) < 200 and "…" in str(err.value)
