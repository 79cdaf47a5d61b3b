"""Plans: per-layer levels within a tolerance, bisection to a target sparsity, schedules that parse."""

from __future__ import annotations

import pytest

from pruning_core.plan import choose_levels, overall_sparsity, plan_for_target, plan_schedule
from pruning_core.schedule import dump_schedule, parse_schedule
from pruning_core.sensitivity import SensitivityPoint


def _points(curves: dict[str, list[tuple[float, float, float]]], group: str = "element") -> list[SensitivityPoint]:
    return [SensitivityPoint(parameter=name, sparsity=s, top1=t1, top5=100.0, loss=loss, samples=100, nnz=0,
                             group=group)
            for name, rows in curves.items() for s, t1, loss in rows]


CURVES = {
    "a.weight": [(0.0, 90.0, 0.30), (0.5, 89.8, 0.31), (0.7, 89.5, 0.35), (0.9, 80.0, 0.90)],
    "b.weight": [(0.0, 90.0, 0.30), (0.5, 88.0, 0.50), (0.7, 85.0, 0.70), (0.9, 70.0, 1.50)],
    "c.weight": [(0.0, 90.0, 0.30), (0.5, 89.9, 0.30), (0.7, 89.2, 0.33), (0.9, 89.0, 0.36)],
}
SIZES = {"a.weight": 1000, "b.weight": 100, "c.weight": 9000}


def test_choose_highest_level_within_top1_drop() -> None:
    plan = choose_levels(_points(CURVES), max_drop=1.0)
    assert plan.levels == {"a.weight": 0.7, "b.weight": 0.0, "c.weight": 0.9}
    assert plan.damage["c.weight"] == pytest.approx(1.0)


def test_choose_by_loss_rise() -> None:
    plan = choose_levels(_points(CURVES), max_drop=0.05, metric="loss", sizes=SIZES)
    assert plan.levels == {"a.weight": 0.7, "b.weight": 0.0, "c.weight": 0.7}  # c at 0.9 rises 0.06
    assert plan.overall_sparsity == pytest.approx((700 + 6300) / 10100)


def test_missing_zero_row_is_an_error() -> None:
    curves = {"a.weight": [(0.5, 89.0, 0.3)]}
    with pytest.raises(ValueError, match="0.0 row"):
        choose_levels(_points(curves), 1.0)


def test_target_sparsity_finds_smallest_tolerance() -> None:
    plan = plan_for_target(_points(CURVES), 0.85, SIZES)
    # tolerance 0.8 gives a=0.7, b=0, c=0.7 -> 0.693; tolerance 1.0 gives c=0.9 -> 0.871
    assert plan.tolerance == pytest.approx(1.0)
    assert plan.overall_sparsity >= 0.85
    assert plan.overall_sparsity == pytest.approx(overall_sparsity(plan.levels, SIZES))
    looser = choose_levels(_points(CURVES), plan.tolerance - 0.01, sizes=SIZES)
    assert looser.overall_sparsity < 0.85


def test_unreachable_target_says_best() -> None:
    with pytest.raises(ValueError, match="out of reach"):
        plan_for_target(_points(CURVES), 0.99, SIZES)


def test_agp_schedule_round_trips_and_groups_levels() -> None:
    plan = choose_levels(_points(CURVES), max_drop=1.0)
    schedule = plan_schedule(plan, epochs=9)
    again = parse_schedule(dump_schedule(schedule))
    assert again == schedule
    classes = {p.cls for p in again.pruners.values()}
    assert classes == {"AutomatedGradualPruner"}
    weights = sorted(w for p in again.pruners.values() for w in p.args["weights"])
    assert weights == ["a.weight", "c.weight"]  # b stays dense
    assert {(p.starting_epoch, p.ending_epoch) for p in again.policies} == {(0, 6)}


def test_one_shot_and_filter_schedules() -> None:
    plan = choose_levels(_points(CURVES, group="filter"), max_drop=1.0)
    one_shot = parse_schedule(dump_schedule(plan_schedule(plan, one_shot=True)))
    assert {p.cls for p in one_shot.pruners.values()} == {"L1RankedStructureParameterPruner"}
    assert all(p.epochs == [0] for p in one_shot.policies)
    agp = parse_schedule(dump_schedule(plan_schedule(plan, epochs=6)))
    assert {p.args["group_type"] for p in agp.pruners.values()} == {"Filters"}


def test_nothing_prunable_is_an_error() -> None:
    with pytest.raises(ValueError, match="nothing to schedule"):
        plan_schedule(choose_levels(_points(CURVES), max_drop=0.0))
