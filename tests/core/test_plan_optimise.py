"""The optimiser (issue 15): optimal against brute force, budget and target modes, the baselines on the same
problem, and plans measured as a whole on a trained digits-cnn (the correction loop meets its budget)."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from pruning_core.datasets import load_dataset, make_loader
from pruning_core.metrics import prunable_parameters
from pruning_core.plan import (
    build_problem,
    equal_tolerance,
    format_plan,
    global_magnitude,
    optimise,
    plan_for_target,
    plan_schedule,
    solve_budget,
    solve_target,
    torch_pruning_global,
    uniform,
)
from pruning_core.plan.verify import correct, verify
from pruning_core.schedule import dump_schedule, parse_schedule
from pruning_core.sensitivity import SensitivityPoint, analyze

torch.set_num_threads(1)


def _instance(seed: int, lattice: bool) -> list[list[tuple[float, float]]]:
    """2-4 classes of 2-5 items; the first item of each is (0, 0) as a dense layer's level 0 is."""
    rng = random.Random(seed)
    classes = []
    for _ in range(rng.randint(2, 4)):
        items = [(0.0, 0.0)]
        for _ in range(rng.randint(1, 4)):
            damage = rng.randint(0, 24) * 0.25 if lattice else rng.uniform(0.0, 6.0)
            items.append((damage, float(rng.randint(1, 40))))
        classes.append(items)
    return classes


def _choices(classes: list[list[tuple[float, float]]]) -> list[tuple[float, float]]:
    """(total damage, total gain) of every way to pick one item per class."""
    return [(sum(c[j][0] for c, j in zip(classes, pick, strict=True)),
             sum(c[j][1] for c, j in zip(classes, pick, strict=True)))
            for pick in itertools.product(*(range(len(c)) for c in classes))]


@pytest.mark.parametrize("seed", range(12))
def test_budget_mode_is_optimal_against_brute_force(seed: int) -> None:
    rng = random.Random(1000 + seed)
    for lattice in (True, False):
        classes = _instance(seed, lattice)
        budget = rng.randint(0, 30) * 0.25 if lattice else rng.uniform(0.0, 8.0)
        best = max(g for d, g in _choices(classes) if d <= budget + 1e-9)
        solution = solve_budget(classes, budget, resolution=0.25 if lattice else None, grid=64)
        assert solution.damage <= budget + 1e-9
        assert solution.damage == pytest.approx(sum(classes[i][j][0] for i, j in enumerate(solution.picks)))
        assert solution.bound >= best - 1e-9  # the LP bound bounds the true optimum
        if lattice:  # damages on the grid: exact
            assert solution.gain == pytest.approx(best)
        else:  # rounded up to a coarse grid: feasible, and no further from the optimum than it reports
            assert best - solution.gain <= solution.gap + 1e-9


@pytest.mark.parametrize("seed", range(12))
def test_target_mode_is_optimal_against_brute_force(seed: int) -> None:
    rng = random.Random(2000 + seed)
    for lattice in (True, False):
        classes = _instance(seed, lattice)
        most = sum(max(g for _, g in c) for c in classes)
        target = rng.uniform(0.0, most)
        best = min(d for d, g in _choices(classes) if g >= target)
        solution = solve_target(classes, target, resolution=0.25 if lattice else None, grid=64)
        assert solution.gain >= target
        assert solution.bound <= best + 1e-9
        if lattice:
            assert solution.damage == pytest.approx(best)
        else:
            assert best - 1e-9 <= solution.damage <= best + solution.gap + 1e-9


@pytest.mark.parametrize("seed", range(6))
def test_target_mode_does_not_overshoot_where_damage_is_free(seed: int) -> None:
    """Levels measured at no drop (noise clamped to 0) cost nothing: the plan still takes no more than the target
    needs, so no choice can be lowered without missing it or adding damage."""
    rng = random.Random(3000 + seed)
    classes = [[(0.0, 0.0)] + [(0.0 if k < 4 else rng.uniform(0, 2), (k + 1) * rng.randint(5, 50)) for k in range(6)]
               for _ in range(4)]
    target = 0.4 * sum(c[-1][1] for c in classes)
    solution = solve_target(classes, target)
    assert solution.gain >= target
    for i, klass in enumerate(classes):
        w0, v0 = klass[solution.picks[i]]
        for w, v in klass:
            assert not (v < v0 and w <= w0 and solution.gain - v0 + v >= target), (i, solution.picks)


def test_out_of_reach_target_and_impossible_budget_say_why() -> None:
    with pytest.raises(ValueError, match="out of reach"):
        solve_target([[(0.0, 0.0), (1.0, 5.0)]], 6.0)
    with pytest.raises(ValueError, match="below the least damage"):
        solve_budget([[(1.0, 5.0)]], 0.5)


def _points(curves: dict[str, list[tuple[float, float]]], samples: int = 400) -> list[SensitivityPoint]:
    return [SensitivityPoint(parameter=name, sparsity=s, top1=t1, top5=100.0, loss=0.3, samples=samples, nnz=0)
            for name, rows in curves.items() for s, t1 in rows]


# top1 in steps of 0.25 = 100 / 400 samples: the optimiser's default grid is this lattice
CURVES = {
    "a.weight": [(0.0, 90.0), (0.5, 89.75), (0.7, 89.5), (0.9, 80.0)],
    "b.weight": [(0.0, 90.0), (0.5, 88.0), (0.7, 85.0), (0.9, 70.0)],
    "c.weight": [(0.0, 90.0), (0.5, 90.25), (0.7, 89.25), (0.9, 89.0)],
}
SIZES = {"a.weight": 1000, "b.weight": 100, "c.weight": 9000, "d.weight": 500}  # d has no points: stays dense


def _brute(curves: dict, sizes: dict, *, budget: float | None = None, target: float | None = None) -> float:
    """The best plan over the measured levels: most weights under a budget, or least damage reaching a target
    (a level measured better than dense counts as no damage)."""
    names = list(curves)
    best = None
    for rows in itertools.product(*(curves[n] for n in names)):
        damage = sum(max(90.0 - t1, 0.0) for _, t1 in rows)
        removed = sum(int(s * sizes[n]) for n, (s, _) in zip(names, rows, strict=True))
        if budget is not None and damage <= budget + 1e-9:
            best = removed if best is None else max(best, removed)
        if target is not None and removed >= target * sum(sizes.values()):
            best = damage if best is None else min(best, damage)
    return best


@pytest.mark.parametrize("budget", [0.0, 0.5, 1.25, 3.0, 12.0])
def test_budget_plan_from_points_is_the_best_under_the_summed_drop(budget: float) -> None:
    plan = optimise(_points(CURVES), budget=budget, sizes=SIZES)
    assert plan.predicted_drop <= budget + 1e-9
    assert plan.gain == _brute(CURVES, SIZES, budget=budget)
    assert plan.gap == pytest.approx(plan.bound - plan.gain)
    assert plan.overall_sparsity == pytest.approx(plan.gain / sum(SIZES.values()))
    assert set(plan.levels) == set(CURVES) and plan.method == "optimal" and plan.budget == budget


@pytest.mark.parametrize("target", [0.3, 0.6, 0.8])
def test_target_plan_from_points_is_the_least_damage_reaching_it(target: float) -> None:
    plan = optimise(_points(CURVES), target=target, sizes=SIZES)
    assert plan.overall_sparsity >= target
    assert plan.predicted_drop == pytest.approx(_brute(CURVES, SIZES, target=target))
    rule = plan_for_target(_points(CURVES), target, SIZES)  # today's rule reaches it with no less damage
    assert sum(max(d, 0.0) for d in rule.damage.values()) >= plan.predicted_drop - 1e-9


def test_interpolated_levels_lie_between_measured_ones_and_are_flagged() -> None:
    measured = optimise(_points(CURVES), target=0.75, sizes=SIZES)
    fine = optimise(_points(CURVES), target=0.75, sizes=SIZES, interpolate=3)
    assert fine.predicted_drop <= measured.predicted_drop + 1e-9  # more choices never cost more
    assert fine.overall_sparsity >= 0.75
    for name in fine.interpolated:
        assert fine.levels[name] not in {s for s, _ in CURVES[name]}
        assert 0.0 < fine.levels[name] < 0.9


def test_a_plan_writes_the_same_distiller_schedules_as_the_rule() -> None:
    plan = optimise(_points(CURVES), budget=1.25, sizes=SIZES)
    for one_shot in (False, True):
        parse_schedule(dump_schedule(plan_schedule(plan, epochs=6, one_shot=one_shot)))
    assert "a.weight" in format_plan(plan)


def test_macs_objective_needs_points_with_macs() -> None:
    with pytest.raises(ValueError, match="macs"):
        optimise(_points(CURVES), objective="macs", budget=1.0)


def test_baselines_return_valid_levels_on_the_same_problem() -> None:
    points = _points(CURVES)
    problem = build_problem(points, sizes=SIZES)
    for plan in (uniform(points, target=0.6, sizes=SIZES), equal_tolerance(points, target=0.6, sizes=SIZES),
                 uniform(points, budget=2.0, sizes=SIZES), equal_tolerance(points, budget=2.0, sizes=SIZES)):
        assert set(plan.levels) == set(CURVES)
        assert all(0.0 <= lv <= problem.max_level(n) for n, lv in plan.levels.items())
        assert plan.predicted_drop == pytest.approx(sum(max(problem.damage_at(n, lv), 0.0)
                                                        for n, lv in plan.levels.items()))
        if plan.target is not None:
            assert plan.overall_sparsity >= 0.6
        else:
            assert plan.predicted_drop <= 2.0 + 1e-9
    levels = set(uniform(points, target=0.6, sizes=SIZES).levels.values())
    assert len(levels) == 1
    # today's rule through the baseline path chooses what plan_for_target chooses
    assert equal_tolerance(points, target=0.6, sizes=SIZES).levels == plan_for_target(points, 0.6, SIZES).levels


def test_global_magnitude_prunes_what_torch_global_unstructured_prunes() -> None:
    from torch.nn.utils import prune

    gen = torch.Generator().manual_seed(0)
    layers = {n: torch.nn.Linear(s // 10, 10) for n, s in (("a", 1000), ("b", 100), ("c", 9000))}
    for layer in layers.values():
        with torch.no_grad():
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * (1 + layer.weight.shape[1] / 300))
    weights = {f"{n}.weight": layer.weight.detach().clone() for n, layer in layers.items()}
    sizes = {n: w.numel() for n, w in weights.items()}
    plan = global_magnitude(_points(CURVES), weights, target=0.6, sizes=sizes)
    prune.global_unstructured([(layer, "weight") for layer in layers.values()], pruning_method=prune.L1Unstructured,
                              amount=0.6)
    for n, layer in layers.items():
        assert int(plan.levels[f"{n}.weight"] * sizes[f"{n}.weight"]) == int((layer.weight_mask == 0).sum())
    assert plan.overall_sparsity == pytest.approx(0.6, abs=1e-4)


# -- on a trained digits-cnn ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_test():
    return make_loader(load_dataset("digits", "test"), batch_size=180)


@pytest.fixture(scope="module")
def element_points(trained_digits_state, digits_test):
    from pruning_core.models import create_model

    model = create_model("digits-cnn")
    model.load_state_dict(trained_digits_state)
    return analyze(model, digits_test, levels="0,0.3,0.5,0.7,0.8,0.9,0.95", device="cpu").points


def test_one_layer_plan_measures_what_its_sensitivity_point_measured(trained_digits, digits_test,
                                                                     element_points) -> None:
    point = next(p for p in element_points if p.parameter == "conv2.weight" and p.sparsity == 0.8)
    base = next(p for p in element_points if p.parameter == "conv2.weight" and p.sparsity == 0.0)
    problem = build_problem(element_points)
    levels = dict.fromkeys(problem.curves, 0.0) | {"conv2.weight": 0.8}
    plan = verify(problem.result(levels, "by hand"), trained_digits, digits_test, device="cpu")
    assert plan.measured_drop == pytest.approx(base.top1 - point.top1)
    assert plan.measured_drop == pytest.approx(plan.predicted_drop)


def test_plan_carries_predicted_and_measured_drop_and_prunes_its_levels(trained_digits, digits_test,
                                                                        element_points) -> None:
    sizes = {n: p.numel() for n, p in prunable_parameters(trained_digits)}
    plan = verify(optimise(element_points, target=0.8, sizes=sizes), trained_digits, digits_test, device="cpu")
    assert plan.predicted_drop >= 0 and plan.measured_drop is not None
    assert plan.measured["dense"] - plan.measured["pruned"] == pytest.approx(plan.measured_drop)
    assert plan.measured["sparsity"] == pytest.approx(plan.overall_sparsity)  # every weight is planned here
    before = {n: p.detach().clone() for n, p in trained_digits.named_parameters()}
    assert all(torch.equal(before[n], p) for n, p in trained_digits.named_parameters())  # weights untouched
    again = verify(optimise(element_points, target=0.8, sizes=sizes), trained_digits, digits_test, device="cpu",
                   dense=plan.measured["dense"])  # the dense model's metric reused: the same measurement
    assert again.measured == plan.measured and again.measured_drop == plan.measured_drop


def test_correction_loop_meets_the_budget_on_digits_cnn(trained_digits, digits_test, element_points) -> None:
    sizes = {n: p.numel() for n, p in prunable_parameters(trained_digits)}
    budget = 2.0
    plan = correct(element_points, trained_digits, digits_test, budget=budget, sizes=sizes, rounds=6, device="cpu")
    assert plan.met and plan.measured_drop <= budget
    assert plan.rounds and plan.rounds[0].budget == budget
    assert all(r.measured_drop > budget for r in plan.rounds[:-1])  # it stops at the first round that meets it
    budgets = [r.budget for r in plan.rounds]
    assert budgets == sorted(budgets, reverse=True)
    assert plan.rounds[-1].levels == plan.levels and plan.budget == budget


def test_torch_pruning_global_ranking_as_filter_levels(trained_digits, digits_test) -> None:
    points = analyze(trained_digits, digits_test, levels="0,0.25,0.5,0.75", group="filter", device="cpu").points
    example = next(iter(digits_test))[0][:1]
    plan = torch_pruning_global(points, trained_digits, example, target=0.3)
    problem = build_problem(points, objective="macs")
    assert set(plan.levels) == set(problem.curves) and plan.method == "torch-pruning-global"
    assert all(0.0 <= lv <= 0.75 for lv in plan.levels.values())
    assert 1 - plan.macs_ratio >= 0.3
    ours = optimise(points, objective="macs", target=0.3)
    assert 1 - ours.macs_ratio >= 0.3 and ours.objective == "macs"


def test_planned_sizes_are_the_prunable_weights_and_every_planned_parameter() -> None:
    """The API (stored shapes) and a plan job (the model) weigh a plan alike, also for a planned LSTM weight."""
    from types import SimpleNamespace

    from pruning_core.plan import planned_sizes

    shapes = {"conv.weight": (4, 3, 3, 3), "conv.bias": (4,), "rnn.weight_hh_l0": (8, 2), "fc.weight": (10, 4)}
    points = [SimpleNamespace(parameter="rnn.weight_hh_l0"), SimpleNamespace(parameter="conv.weight")]
    assert planned_sizes(shapes, ["conv.weight", "fc.weight"], points) == {
        "conv.weight": 108, "fc.weight": 40, "rnn.weight_hh_l0": 16}
    assert planned_sizes(shapes, None, points) == {"conv.weight": 108, "rnn.weight_hh_l0": 16, "fc.weight": 40}
