"""Measured search: the optimiser's plan improved by measuring whole plans, at the same target.

Sensitivity predicts a plan's damage as the sum of one-layer drops, but layers pruned together compound (or
cancel): the knapsack's choice is optimal for that prediction, not for the model. :func:`search` starts from
it and tries exchanges that keep the target reached: one parameter a level up, another as far down as the
target then allows (or down a few levels, the other raised as little as restores the target). Each candidate
is measured as a whole (every chosen layer pruned at once, one evaluation, as
:func:`~pruning_core.plan.verify.verify` measures); the best exchange that is no worse on every measure and
better on one is taken, until none is or the evaluations are spent. Two measures: the plan's metric, and
either the loss or, for a model with BatchNorm, the metric again with the BatchNorm statistics re-estimated on
the search data (no weights change). A model with BatchNorm often collapses to chance when pruned hard in one
shot, and then every plan measures alike; with its statistics re-estimated the plans differ as they will
after fine-tuning (EagleEye's adaptive BatchNorm, Li et al., ECCV 2020). Requiring both measures keeps the
search from chasing one sample's noise.

The search measures on the data it is given: give it the sensitivity data (a validation split), never the
data the plan is judged on. Every accepted exchange is a :class:`~pruning_core.plan.result.PlanRound` (its
``measured_drop`` the metric's); the result is verified on that same data.

``starts`` (other plans for the same target: the baselines) are measured beside the knapsack's plan, their
exact levels added to the levels the search may choose, and the search begins from whichever measures best
(the plan's metric first, then the second measure; for a model with BatchNorm the re-estimated measure first,
since the plain one of a collapsed model ranks noise). So a searched plan never measures worse on the search
data, on that leading measure, than any plan it was given: the sum of one-layer drops can rank a baseline's
plan below the knapsack's when, pruned together, it is the better one (global magnitude on an MLP at 80 %).

``finetune`` (a function that trains a pruned copy in place, keeping its masks: the fine-tuning the plan will
get) makes the last choice one of fine-tuned plans. The search then descends from every start, not only the
best, the evaluations shared; up to ``finalists`` plans measured no worse than the best start on the measure
that ranked it (each descent's end, then the best start's path back from its end) are fine-tuned and measured
again on the search data, and the best of them is returned. One-shot damage and damage after fine-tuning rank
plans differently (a plan that leaves a few large weights of a sensitive layer recovers faster), and a plan is
pruned to be fine-tuned.

Needs torch (imported by name, like :mod:`.verify`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import permutations
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..points import metric_value
from ..sensitivity import _swapped
from .problem import Option, Problem, build_problem
from .result import PlanResult, PlanRound
from .verify import _analysis, plan_masks, verify

#: Whole-plan evaluations a search may spend by default (a round costs about two per parameter pair).
EVALUATIONS = 300
#: Plans of the search's path fine-tuned for the last choice, when a ``finetune`` is given.
FINALISTS = 6


def _score(measures: Any, metric: str, higher_is_better: bool) -> tuple[float, float]:
    """(damage in the metric, loss): smaller is better."""
    values = measures.as_baseline()
    value = metric_value(values, metric)
    loss = metric_value(values, "loss")
    return (-value if higher_is_better else value, loss if loss is not None else 0.0)


def _exchanges(state: Mapping[str, int], names: list[str], counts: list[int],
               gain: Callable[[Mapping[str, int]], float], need: float, steps: int) -> list[dict[str, int]]:
    """Every plan one exchange away that still reaches ``need``: one parameter alone as far down as the target
    allows (where an earlier exchange overshot it); for each ordered pair (a, b), ``a`` one level up and ``b``
    as far down as the target allows; and ``b`` 1..``steps`` levels down with ``a`` raised as little as
    restores the target (layers of very different sizes trade in unequal steps)."""
    top = dict(zip(names, counts, strict=True))
    seen: set[tuple[int, ...]] = set()
    out: list[dict[str, int]] = []

    def keep(picks: dict[str, int]) -> None:
        key = tuple(picks[n] for n in names)
        if key not in seen and picks != state:
            seen.add(key)
            out.append(picks)

    for b in names:
        picks = dict(state)
        while picks[b] > 0 and gain({**picks, b: picks[b] - 1}) >= need:
            picks[b] -= 1
        keep(picks)
    for a, b in permutations(names, 2):
        if state[a] + 1 < top[a] and state[b] > 0:
            picks = {**state, a: state[a] + 1}
            while picks[b] > 0 and gain({**picks, b: picks[b] - 1}) >= need:
                picks[b] -= 1
            if picks[b] < state[b]:
                keep(picks)
        for k in range(1, steps + 1):
            if state[b] - k < 0:
                break
            picks = {**state, b: state[b] - k}
            while picks[a] + 1 < top[a] and gain(picks) < need:
                picks[a] += 1
            if gain(picks) >= need and picks[a] > state[a]:
                keep(picks)
    return out


def _better(score: tuple[float, ...], best: tuple[float, ...]) -> bool:
    """Whether a measured plan improves on the best so far: no worse on any measure and better on one (one
    sample's worth on a measure alone is noise the plan would chase)."""
    return all(a <= b for a, b in zip(score, best, strict=True)) and score != best


@contextlib.contextmanager
def _recalibrated(norms: list[nn.modules.batchnorm._BatchNorm], analysis: Any) -> Iterator[None]:
    """BatchNorm statistics re-estimated on the search data for a while (a cumulative average over one pass,
    no weight changes), then restored."""
    saved = [(m.momentum, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
             for m in norms]
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        with torch.no_grad():
            for batch in analysis.batches:
                analysis.outputs(batch)
        for m in norms:
            m.eval()
        yield
    finally:
        for m, (momentum, mean, var, count) in zip(norms, saved, strict=True):
            m.momentum = momentum
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(count)
            m.eval()


def _reach(state: Mapping[str, int], names: list[str], counts: list[int], gain: Callable[[Mapping[str, int]], float],
           need: float, damage: Callable[[str, int], float]) -> dict[str, int]:
    """``state`` raised until it reaches ``need`` where it falls short (an interpolated MACs level removes less
    than the interpolation says): each step the one level up that gains most per predicted damage added."""
    state = dict(state)
    top = dict(zip(names, counts, strict=True))
    while gain(state) < need:
        steps = [(n, gain({**state, n: state[n] + 1}) - gain(state),
                  max(damage(n, state[n] + 1) - damage(n, state[n]), 1e-9)) for n in names if state[n] + 1 < top[n]]
        steps = [s for s in steps if s[1] > 0]
        if not steps:
            raise ValueError("the plan's target is out of reach at the measured masks")
        name = max(steps, key=lambda s: s[1] / s[2])[0]
        state[name] += 1
    return state


def _with_levels(problem: Problem, name: str, levels: Iterable[float]) -> list[Option]:
    """``name``'s options with ``levels`` added where not already there (a start plan's exact levels), sorted."""
    options = list(problem.options[name])
    for level in levels:
        if all(abs(o.level - level) > 1e-9 for o in options):
            options.append(Option(level, max(problem.damage_at(name, level), 0.0), problem.gain_at(name, level),
                                  True))
    return sorted(options, key=lambda o: o.level)


def _nearest(options: list[Option], level: float) -> int:
    return min(range(len(options)), key=lambda j: abs(options[j].level - level))


def search(plan: PlanResult, points: Iterable[Any], model: nn.Module, loader: DataLoader, *,
           sizes: Mapping[str, int] | None = None, interpolate: int = 0, evaluations: int = EVALUATIONS,
           steps: int = 3, recalibrate: bool = True, coupled: bool = False, starts: Iterable[PlanResult] = (),
           finetune: Callable[[nn.Module, Any], None] | None = None, finalists: int = FINALISTS,
           **kwargs: Any) -> PlanResult:
    """``plan`` (a target-mode plan of :func:`~pruning_core.plan.optimise`) improved by measured exchanges that
    keep its target; verified on ``loader``, with every accepted exchange in ``rounds``. ``points``, ``sizes``
    and ``interpolate`` must be those the plan was solved from (they give each parameter's levels and gains);
    ``starts``: other plans to begin from where one measures better; ``finetune(model, masks)``: the last
    choice among ``finalists`` fine-tuned plans (module docstring); ``kwargs`` go to
    :class:`~pruning_core.sensitivity.SensitivityAnalysis` (``device``, ``samples``...)."""
    if plan.target is None:
        raise ValueError("search keeps a plan's target: give a plan solved for a target, not a budget")
    problem = build_problem(points, objective=plan.objective, sizes=sizes, metric=plan.metric,
                            higher_is_better=plan.higher_is_better, interpolate=interpolate)
    names = list(problem.options)
    starts = list(starts)
    options = {n: _with_levels(problem, n, [s.levels.get(n, 0.0) for s in starts]) for n in names}
    state = {n: _nearest(options[n], plan.levels.get(n, 0.0)) for n in names}

    def levels_of(picks: Mapping[str, int]) -> dict[str, float]:
        return {n: options[n][j].level for n, j in picks.items()}

    def damage(n: str, j: int) -> float:
        return options[n][j].damage
    analysis = _analysis(plan, model, loader, coupled=coupled, **kwargs)
    # MACs between measured levels are not the interpolation's: the joint forecast of the masks (what thinning
    # leaves, as a point's footprint) says what a candidate really removes
    exact = analysis.footprints if plan.objective == "macs" else None
    total = exact.dense.macs if exact is not None else problem.total
    need = plan.target * total - 1e-9 * max(total, 1.0)
    spent = 0
    gains: dict[tuple[int, ...], float] = {}

    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats] if recalibrate else []

    def measure(picks: Mapping[str, int]) -> tuple[float, ...]:
        nonlocal spent
        spent += 1
        masks = plan_masks(analysis, levels_of(picks))
        pruned = analysis.pruned(masks) if masks else {}
        with _swapped(analysis.named, pruned):
            plain = _score(analysis.evaluate(), plan.metric, plan.higher_is_better)
            if not norms:
                return plain
            with _recalibrated(norms, analysis):
                again = _score(analysis.evaluate(), plan.metric, plan.higher_is_better)
        return (plain[0], again[0])

    def gain(picks: Mapping[str, int]) -> float:
        if exact is None:
            return sum(options[n][j].gain for n, j in picks.items())
        key = tuple(picks[n] for n in names)
        if key not in gains:
            masks = plan_masks(analysis, levels_of(picks))
            gains[key] = total - exact.forecast(analysis.pruned(masks)).macs
        return gains[key]

    counts = [len(options[n]) for n in names]
    state = _reach(state, names, counts, gain, need, damage)
    history: list[PlanRound] = []
    try:
        dense = _score(analysis.evaluate(), plan.metric, plan.higher_is_better)[0]

        def record(picks: Mapping[str, int], score: tuple[float, ...]) -> None:
            levels = levels_of(picks)
            history.append(PlanRound(len(history), plan.target, problem.result(levels, plan.method).predicted_drop,
                                     score[0] - dense, {**plan.levels, **levels} if not history else levels))

        def descend(state: dict[str, int], best: tuple[float, ...], until: int) -> list[tuple[dict[str, int], tuple]]:
            """Exchanges from ``state`` while one improves and fewer than ``until`` evaluations are spent:
            the path, ``state`` first, each with its measures."""
            path = [(state, best)]
            while spent < until:
                found = None
                for picks in _exchanges(state, names, counts, gain, need, steps):
                    if spent >= until:
                        break
                    score = measure(picks)
                    if _better(score, best) and (found is None or score < found[0]):
                        found = (score, picks)
                if found is None:
                    break
                best, state = found
                record(state, best)
                path.append((state, best))
            return path

        first = (state, measure(state))
        record(*first)
        begun = [first]
        for other in starts:
            picks = _reach({n: _nearest(options[n], other.levels.get(n, 0.0)) for n in names}, names, counts,
                           gain, need, damage)
            if all(picks != b for b, _ in begun):
                begun.append((picks, measure(picks)))
        # which start is best: for a BatchNorm model the re-estimated measure first (pruned hard in one shot it
        # collapses to chance, so the plain measure ranks noise), else the metric first; the other breaks ties
        lead = 1 if norms else 0
        begun.sort(key=lambda b: (b[1][lead], b[1][1 - lead]))
        if begun[0] is not first:
            record(*begun[0])
        # one descent from the best start; for a fine-tuned choice one from every start, sharing the evaluations
        paths = []
        for k, (picks, score) in enumerate(begun if finetune is not None else begun[:1]):
            share = (evaluations - spent) // (len(begun) - k) if finetune is not None else evaluations - spent
            paths.append(descend(picks, score, spent + share))
    finally:
        analysis.restore()
    state = paths[0][-1][0]
    tuned: list[dict[str, Any]] = []
    if finetune is not None:  # each descent's end and the best start's path, no worse one-shot than the best start
        floor = begun[0][1][lead]
        pool = [path[-1] for path in paths] + paths[0][::-1]
        keep: list[tuple[dict[str, int], float]] = []
        for picks, score in pool:
            if score[lead] <= floor and all(picks != k for k, _ in keep) and len(keep) < finalists:
                keep.append((picks, -score[0] if plan.higher_is_better else score[0]))
        state, tuned = _finetuned(keep, lambda picks: {**plan.levels, **levels_of(picks)}, plan, problem, model,
                                  loader, finetune, coupled=coupled, **kwargs)
    levels = {**plan.levels, **levels_of(state)}
    result = problem.result(levels, plan.method, target=plan.target, bound=plan.bound)
    result = dataclasses.replace(result, gap=None)  # the knapsack's gap no longer describes the searched plan
    checked = verify(result, model, loader, coupled=coupled, macs=True, **kwargs)
    if tuned:
        checked.measured["finetuned"] = tuned
    return dataclasses.replace(checked, rounds=history)


def _finetuned(path: list[tuple[dict[str, int], float]], levels_of: Callable[[Mapping[str, int]], dict[str, float]],
               plan: PlanResult, problem: Problem, model: nn.Module, loader: DataLoader,
               finetune: Callable[[nn.Module, Any], None], *, coupled: bool,
               **kwargs: Any) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """The plan of ``path`` (each with its one-shot metric) that measures best on ``loader`` after ``finetune``
    (each on a copy of the model, its masks kept), the earlier on a tie; with each finalist's levels, one-shot
    and fine-tuned metric."""
    from .verify import apply_plan

    scored = []
    for picks, one_shot in path:
        clone = copy.deepcopy(model)
        candidate = problem.result(levels_of(picks), plan.method, target=plan.target)
        masks = apply_plan(candidate, clone, loader, coupled=coupled, **kwargs)
        finetune(clone, masks)
        check = _analysis(candidate, clone, loader, coupled=coupled, **kwargs)  # the sweep's measure, as verify's
        try:
            value = metric_value(check.evaluate().as_baseline(), plan.metric)
        finally:
            check.restore()
        scored.append((-value if plan.higher_is_better else value, picks, candidate.levels, one_shot, value))
    best = min(range(len(scored)), key=lambda i: scored[i][0])
    return scored[best][1], [{"levels": lv, "one_shot": o, plan.metric: v, "chosen": i == best}
                             for i, (_, _, lv, o, v) in enumerate(scored)]
