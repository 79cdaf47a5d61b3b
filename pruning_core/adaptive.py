"""Adaptive evaluation (opt-in, approximate): stop a sensitivity point once its top1 drop is known to lie
within or beyond a tolerance.

The samples are evaluated in a seeded random order (:func:`shuffled_loader`). The baseline's per-sample
scores are kept from its one full pass (:class:`BaseScores`); a level's samples are then scored both ways, so
its drop on the whole data set is the mean of the paired differences ``d`` (1: only the baseline is right, -1:
only the pruned model is, 0: both or neither) over the ``N`` samples. As the samples arrive (drawn without
replacement), two bets are placed on them (:class:`PairedTest`; Waudby-Smith and Ramdas, "Confidence sequences
for sampling without replacement", NeurIPS 2020): one that the drop lies within the tolerance, one that it lies
beyond. Each bettor's wealth is a nonnegative martingale while its side is wrong, so by Ville's inequality it
reaches ``1 / (1 - confidence)`` with probability at most ``1 - confidence``, at any of the looks, however many
(valid under optional stopping: no union bound over looks). The point stops when a bettor gets there and the
paired estimate agrees. A point never decided uses every sample and is the exact point.

A stopped point reports the baseline's full-data metrics minus the paired change seen on its samples (the
difference estimator: unbiased, and on the verdict's side), the bound the verdict proved (``top1_low`` =
baseline - tolerance when within, ``top1_high`` = baseline - tolerance when beyond; the other side ``None``),
``samples`` as the samples it used, ``approximate`` true and ``metrics["confidence"]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from pruning_core.points import CONFIDENCE
from pruning_core.tasks import Evaluation, Measures, classification_hits

#: A bet stakes at most this share of what the bettor could lose on one sample (wealth stays positive).
MAX_STAKE = 0.9


# -- the stopping rule --------------------------------------------------------------------------------

@dataclass(frozen=True)
class AdaptiveRule:
    """The stopping rule: ``tolerance`` in top1 points, ``confidence`` that a stopped point is on the right side."""

    tolerance: float
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if not self.tolerance >= 0:
            raise ValueError(f"adaptive tolerance must be >= 0 top1 points (got {self.tolerance})")
        if not 0 < self.confidence < 1:
            raise ValueError(f"adaptive confidence must lie in (0, 1) (got {self.confidence})")


class PairedTest:
    """Two bettors on one level's paired differences ``d`` (in -1, 0, 1) of a population of ``population`` samples
    seen in a uniformly random order: ``within`` wins when the drop is at most the tolerance, ``beyond`` when above.

    In ``y = (d + 1) / 2`` (in [0, 1]), the drop is at the tolerance's edge when the population's sum of ``y`` is
    ``edge``; sample ``i`` then has the conditional mean ``mu_i = (edge - sum of y before it) / (samples left)``.
    The ``within`` bettor multiplies its wealth by ``1 - lam_i (y_i - mu_i)`` against the first drop beyond the
    tolerance, the ``beyond`` bettor by ``1 + lam_i (y_i - mu_i)`` against the tolerance itself; a drop further on
    the wrong side only lowers the wealth, so one edge each covers the whole wrong side. ``lam_i >= 0`` is set
    from the samples before ``i`` alone (the approximate growth-rate-optimal bet, capped by :data:`MAX_STAKE`).
    """

    def __init__(self, rule: AdaptiveRule, population: int) -> None:
        self.population, self.tolerance = population, rule.tolerance
        self.allowed = math.floor(rule.tolerance * population / 100.0 + 1e-9)  # drop <= t  <=>  sum d <= allowed
        self.edges = {"within": (self.allowed + 1 + population) / 2.0, "beyond": (self.allowed + population) / 2.0}
        self.wealth = {"within": 0.0, "beyond": 0.0}  # log wealth
        self.goal = math.log(1.0 / (1.0 - rule.confidence))
        self.seen, self.sum_d, self.sum_y, self.sum_y2 = 0, 0, 0.0, 0.0

    def add(self, d: torch.Tensor) -> None:
        """Bet on a batch's differences, in order (numpy on the CPU: a batch's few hundred values)."""
        y = (d.to(torch.float64).cpu().numpy() + 1.0) / 2.0
        before = self.seen + np.arange(len(y), dtype=np.float64)  # samples before each one
        sum_y = self.sum_y + np.cumsum(y) - y
        sum_y2 = self.sum_y2 + np.cumsum(y * y) - y * y
        mean = (0.5 + sum_y) / (before + 1.0)  # a prior half-sample at 1/2 keeps the first bets small
        var = (0.25 + sum_y2 - sum_y * sum_y / np.maximum(before, 1.0)) / (before + 1.0)
        left = self.population - before
        for side, sign in (("within", -1.0), ("beyond", 1.0)):
            mu = (self.edges[side] - sum_y) / left
            gap = sign * (mean - mu)  # how far the samples so far lean to this bettor's side
            worst = (1.0 - mu) if sign < 0 else mu  # what a stake of 1 loses on the worst sample
            lam = np.minimum(np.maximum(gap / (var + gap * gap), 0.0), MAX_STAKE / np.maximum(worst, 1e-12))
            lam = np.where((mu > 0) & (mu < 1), lam, 0.0)  # outside (0, 1) that edge is out of reach: no bet
            self.wealth[side] += float(np.log1p(sign * lam * (y - mu)).sum())
        self.seen += len(y)
        self.sum_d += int(round(2 * y.sum())) - len(y)
        self.sum_y += float(y.sum())
        self.sum_y2 += float((y * y).sum())

    @property
    def verdict(self) -> bool | None:
        """True: within the tolerance, False: beyond it, None: not decided (nor while the paired estimate, which the
        plan rule reads, lies on the other side)."""
        estimate_within = 100.0 * self.sum_d / max(self.seen, 1) <= self.tolerance + 1e-12
        if self.seen and self.wealth["within"] >= self.goal and estimate_within:
            return True
        if self.seen and self.wealth["beyond"] >= self.goal and not estimate_within:
            return False
        return None


# -- data order and per-sample scores -----------------------------------------------------------------

def sample_order(size: int, seed: int) -> list[int]:
    """The seeded random order the samples are evaluated in."""
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed)).tolist()


def shuffled_loader(loader: DataLoader, seed: int) -> DataLoader:
    """The loader's samples in :func:`sample_order`, batched as the loader batches them."""
    try:
        size = len(loader.dataset)
    except TypeError as exc:
        raise ValueError("adaptive evaluation draws the samples in a random order: it needs a sized dataset, "
                         "not an iterable one") from exc
    return DataLoader(Subset(loader.dataset, sample_order(size, seed)), batch_size=loader.batch_size or 256,
                      shuffle=False, num_workers=loader.num_workers, collate_fn=loader.collate_fn)


def sample_scores(outputs: Any, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per sample of a batch: top1 hit, top5 hit, cross-entropy (as ``tasks``' classification sums them)."""
    logits, target, hit = classification_hits(outputs, batch)
    return hit[:, 0], hit.any(dim=1), F.cross_entropy(logits, target, reduction="none").double()


@dataclass
class BaseScores:
    """The baseline's per-sample scores, batch by batch in evaluation order, and its full-data measures."""

    batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=list)
    measures: Measures | None = None

    def add(self, outputs: Any, batch: Any) -> None:
        self.batches.append(sample_scores(outputs, batch))


@dataclass
class PairedEstimate(Measures):
    """A level stopped early: the baseline's measures minus the paired change on the samples used."""

    top1_estimate: float = 0.0
    top5_estimate: float | None = None
    top1_bounds: tuple[float | None, float | None] = (None, None)  # the side the verdict proved
    confidence: float = 0.95

    @property
    def top1(self) -> float | None:
        return self.top1_estimate

    @property
    def top5(self) -> float | None:
        return self.top5_estimate

    def fill(self, point: Any) -> None:
        point.top1, point.top5, point.loss, point.samples = self.top1, self.top5, self.loss, self.samples
        point.top1_low, point.top1_high = self.top1_bounds
        point.top5_low = point.top5_high = None
        point.metrics = {**self.metrics, CONFIDENCE: self.confidence}
        point.approximate = True


class PairedTally:
    """One level's evaluation under the rule: fed batch by batch in the baseline's order until ``done``."""

    def __init__(self, rule: AdaptiveRule, base: BaseScores, evaluation: Evaluation) -> None:
        if base.measures is None:
            raise ValueError("the baseline must be measured before a level is")
        self.rule, self.base, self.evaluation = rule, base, evaluation
        self.test = PairedTest(rule, base.measures.samples)
        self.looked = 0  # batches scored so far
        self.lost = self.gained = 0
        self.top5_change = self.loss_change = 0.0

    @property
    def seen(self) -> int:
        return self.test.seen

    @property
    def done(self) -> bool:
        return self.test.verdict is not None or self.seen >= self.base.measures.samples

    def add(self, outputs: Any, batch: Any) -> None:
        """Score one batch both ways (one sync) and bet on it."""
        self.evaluation.add(outputs, batch)
        base1, base5, base_loss = self.base.batches[self.looked]
        hit1, hit5, loss = sample_scores(outputs, batch)
        d = base1.to(torch.float64) - hit1.to(torch.float64)
        sums = torch.stack([base5.sum().double() - hit5.sum().double(), (base_loss - loss).sum()])
        host = torch.cat([sums, d]).cpu()
        self.looked += 1
        self.top5_change += float(host[0])
        self.loss_change += float(host[1])
        d = host[2:]
        self.lost += int((d > 0).sum())
        self.gained += int((d < 0).sum())
        self.test.add(d)

    def result(self) -> Measures:
        """The exact measures when every sample was used, else the paired estimate."""
        measured = self.evaluation.result()
        base = self.base.measures
        verdict = self.test.verdict
        if self.seen >= base.samples or verdict is None:
            return measured
        n = self.seen
        top5 = None if base.top5 is None else base.top5 - 100.0 * self.top5_change / n
        edge = max(0.0, base.top1 - self.rule.tolerance)
        return PairedEstimate(samples=n, loss=base.loss - self.loss_change / n, metrics=dict(measured.metrics),
                              top1_estimate=base.top1 - 100.0 * (self.lost - self.gained) / n,
                              top5_estimate=top5, top1_bounds=(edge, None) if verdict else (None, edge),
                              confidence=self.rule.confidence)
