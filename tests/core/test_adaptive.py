"""Adaptive evaluation (issue 20): the interval rule's exactness and validity, and adaptive sweeps on digits-cnn:
stopped points are flagged approximate and record their samples and confidence, a point never decided is the
exact one, both engines agree, and the equal-tolerance rule chooses the exact sweep's levels."""

from __future__ import annotations

import random

import pytest
import torch

from pruning_core.adaptive import AdaptiveRule, PairedTest, sample_order, shuffled_loader
from pruning_core.datasets import load_dataset, make_loader
from pruning_core.plan.rule import choose_levels
from pruning_core.points import POINT_FLAGS
from pruning_core.sensitivity import analyze

torch.set_num_threads(1)
LEVELS = "0,0.3,0.6,0.9"


def decide(rule: AdaptiveRule, diffs: list[float], population: int, batch: int) -> tuple[bool | None, int]:
    """Bet on ``diffs`` (the population in its evaluation order) batch by batch: (verdict, samples used)."""
    test = PairedTest(rule, population)
    x = torch.tensor(diffs, dtype=torch.float64)
    for start in range(0, population, batch):
        test.add(x[start:start + batch])
        if test.seen < population and test.verdict is not None:
            break
    return test.verdict, test.seen


def test_rule_decides_only_when_the_drop_is_known_to_lie_on_one_side() -> None:
    rule = AdaptiveRule(tolerance=1.0, confidence=0.95)
    verdict, used = decide(rule, [0.0] * 10000, 10000, 128)  # nothing changes: within, in a few hundred
    assert verdict is True and used <= 512
    verdict, used = decide(rule, [1.0] * 10000, 10000, 128)  # every sample lost: beyond, on the first batch
    assert verdict is False and used == 128
    # no flips seen in 160 of 200 samples: 3 lost ones (1.5 points) would all hide in the last 40 less than 1 %
    # of the time, so even a small set decides before its end (the bets count the samples left)
    assert decide(rule, [0.0] * 200, 200, 20) == (True, 160)
    with pytest.raises(ValueError):
        AdaptiveRule(tolerance=-1.0)
    with pytest.raises(ValueError):
        AdaptiveRule(tolerance=1.0, confidence=1.0)


@pytest.mark.parametrize(("lost", "gained"), [(24, 2), (40, 20)])
def test_wrong_verdicts_are_rarer_than_the_confidence_allows(lost: int, gained: int) -> None:
    """Populations whose drop sits just beyond (5.5 points) or at (5) the tolerance of 5 points, 400 samples in
    random orders, looked at after every batch: the share of runs stopped on the wrong side stays under
    1 - confidence."""
    rule, population, runs = AdaptiveRule(tolerance=5.0, confidence=0.8), 400, 100
    truth = 100.0 * (lost - gained) / population <= rule.tolerance
    items = [1.0] * lost + [-1.0] * gained + [0.0] * (population - lost - gained)
    rng = random.Random(lost * 1000 + gained)
    wrong = 0
    for _ in range(runs):
        rng.shuffle(items)
        verdict, used = decide(rule, items, population, 20)
        wrong += used < population and verdict != truth
    assert wrong / runs <= 1 - rule.confidence, wrong


@pytest.fixture(scope="module")
def digits_loader():
    return make_loader(load_dataset("digits", "test"), batch_size=32)


ADAPTIVE = {"levels": LEVELS, "device": "cpu", "adaptive_tolerance": 1.0}


@pytest.fixture(scope="module")
def adaptive_fast(trained_digits_state, digits_loader):
    return analyze(_digits(trained_digits_state), digits_loader, **ADAPTIVE)


def _digits(state):
    from pruning_core.models import create_model

    model = create_model("digits-cnn")
    model.load_state_dict(state)
    return model.eval()


def test_adaptive_points_are_flagged_and_an_undecided_point_is_the_exact_one(trained_digits, digits_loader,
                                                                           adaptive_fast):
    # the exact sweep over the same samples in the same order: what a point that used all of them must equal
    ordered = make_loader(torch.utils.data.Subset(digits_loader.dataset, sample_order(450, 0)), batch_size=32)
    exact = analyze(trained_digits, ordered, levels=LEVELS, device="cpu")
    assert adaptive_fast.baseline == exact.baseline
    stopped = [p for p in adaptive_fast.points if p.samples < 450]
    full = [p for p in adaptive_fast.points if p.samples == 450]
    assert stopped and full
    for p in stopped:
        assert p.approximate and p.sparsity > 0 and p.confidence == 0.95 and p.samples % 32 == 0
        edge = adaptive_fast.baseline["top1"] - 1.0  # the bound the verdict proved, on the verdict's side
        assert (p.top1_low, p.top1_high) == ((edge, None) if p.top1 >= edge else (None, edge)), p
    assert "confidence" in POINT_FLAGS  # a flag of the point, not a metric plans or selectors offer
    by_key = {(p.parameter, p.sparsity): p for p in exact.points}
    for p in full:  # never decided early: every field as the exact sweep's
        assert p == by_key[p.parameter, p.sparsity] and not p.approximate and p.confidence is None
    # the equal-tolerance rule at the tolerance chooses the exact sweep's level for every layer, on fewer samples
    assert choose_levels(adaptive_fast.points, 1.0).levels == choose_levels(exact.points, 1.0).levels
    assert sum(p.samples for p in adaptive_fast.points) < sum(p.samples for p in exact.points)


def test_adaptive_engines_agree(trained_digits, digits_loader, adaptive_fast):
    """The plain engine stops at the same samples with the same numbers as the fast one."""
    plain = analyze(trained_digits, digits_loader, engine="plain", **ADAPTIVE)
    assert [p.samples for p in plain.points] == [p.samples for p in adaptive_fast.points]
    for p, q in zip(plain.points, adaptive_fast.points, strict=True):
        assert (p.top1, p.top5, p.top1_low, p.top1_high, p.approximate) == \
               (q.top1, q.top5, q.top1_low, q.top1_high, q.approximate)
        assert p.loss == pytest.approx(q.loss, rel=1e-5)


def test_adaptive_needs_top1_and_a_sized_dataset(trained_digits, digits_loader):
    with pytest.raises(ValueError, match="classification"):
        analyze(trained_digits, digits_loader, levels="0,0.5", metric=lambda out, b: out[:, 0], task=None,
                adaptive_tolerance=1.0)

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield from ((x, y) for x, y in digits_loader.dataset)

    with pytest.raises(ValueError, match="sized"):
        shuffled_loader(torch.utils.data.DataLoader(Stream(), batch_size=8), 0)
