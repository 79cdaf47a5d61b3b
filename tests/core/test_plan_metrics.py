"""Plans on whichever metric the points have (issue 14): a language model's perplexity (lower is better, no
top1), a custom metric that says its direction, and errors that name what the points do have. Torch-free."""

from __future__ import annotations

import math

import pytest

from pruning_core.plan import choose_levels, format_plan, plan_answer, plan_for_target
from pruning_core.points import SensitivityPoint, metric_names

# parameter -> [(sparsity, token loss, custom score)]: b is hurt most by the loss, a by the score
CURVES = {
    "a.weight": [(0.0, 3.0, 0.90), (0.5, 3.1, 0.60), (0.9, 3.3, 0.20)],
    "b.weight": [(0.0, 3.0, 0.90), (0.5, 3.6, 0.88), (0.9, 4.5, 0.85)],
}
SIZES = {"a.weight": 300, "b.weight": 700}


def _points() -> list[SensitivityPoint]:
    return [SensitivityPoint(parameter=name, sparsity=s, top1=None, top5=None, loss=loss, samples=64, nnz=0,
                             metrics={"perplexity": math.exp(loss), "score": score})
            for name, rows in CURVES.items() for s, loss, score in rows]


def _rise(name: str, s: float) -> float:
    (base,) = [math.exp(loss) for s0, loss, _ in CURVES[name] if s0 == 0.0]
    (value,) = [math.exp(loss) for s0, loss, _ in CURVES[name] if s0 == s]
    return value - base


def test_the_metrics_a_set_of_points_has() -> None:
    assert metric_names(_points()) == ["loss", "perplexity", "score"]
    assert metric_names([p.to_dict() for p in _points()]) == ["loss", "perplexity", "score"]


def test_perplexity_is_planned_by_its_rise() -> None:
    tolerance = _rise("a.weight", 0.9) + 1e-9  # a's whole curve fits, b's first step does not
    assert _rise("b.weight", 0.5) > tolerance
    plan = choose_levels(_points(), tolerance, metric="perplexity", sizes=SIZES)
    assert plan.levels == {"a.weight": 0.9, "b.weight": 0.0} and plan.higher_is_better is False
    assert plan.damage["a.weight"] == pytest.approx(_rise("a.weight", 0.9))
    assert plan.overall_sparsity == pytest.approx(270 / 1000)
    text = format_plan(plan)
    assert "perplexity rise" in text and "top1" not in text and "loss" not in text
    target = plan_for_target(_points(), 0.5, SIZES, metric="perplexity")
    assert target.levels["b.weight"] == 0.5 and target.tolerance == pytest.approx(_rise("b.weight", 0.5))


def test_a_custom_metric_plans_by_the_direction_it_is_given() -> None:
    higher = choose_levels(_points(), 0.05, metric="score", higher_is_better=True)
    assert higher.levels == {"a.weight": 0.0, "b.weight": 0.9}  # a's score drops 0.3 at once
    assert "score drop" in format_plan(higher)
    lower = choose_levels(_points(), 0.05, metric="score", higher_is_better=False)
    assert lower.levels == {"a.weight": 0.9, "b.weight": 0.9}  # read as lower-better, a falling score never hurts
    with pytest.raises(ValueError, match="'score' is not a built-in one"):
        choose_levels(_points(), 0.05, metric="score")


def test_a_metric_the_points_lack_is_named_with_those_they_have() -> None:
    with pytest.raises(ValueError, match=r"no 'top1'; they have: loss, perplexity, score"):
        choose_levels(_points(), 1.0)
    answer = plan_answer(_points(), max_drop=1.0, metric="top5")
    assert answer == {"error": "the points have no 'top5'; they have: loss, perplexity, score"}
    ok = plan_answer(_points(), max_drop=0.5, metric="loss", epochs=3)
    assert ok["levels"] == {"a.weight": 0.9, "b.weight": 0.0} and ok["unit"] == "loss rise"
