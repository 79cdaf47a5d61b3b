"""Plans side by side (issue 15): the optimiser against every baseline, at the same target, on the same work.

Per case a model is trained, its sensitivity measured on a part of the training split held out of training,
and each method plans the same target from the same points: ``optimal`` (:func:`pruning_core.plan.optimise`,
measured levels plus ``--interpolate`` levels per gap, then :func:`pruning_core.plan.search.search` on the
held-out part: started from the best-measured of it and the baselines' plans, its last choice the finalist
that fine-tunes best there, seed 0), ``knapsack`` (the optimiser alone, shown), ``uniform``,
``equal-tolerance`` (today's rule), ``global-magnitude`` (element cases) and ``torch-pruning-global`` (filter cases).
Every plan is then measured on the test split as a whole, one-shot (:func:`pruning_core.plan.verify.verify`),
and again after the same fine-tuning (the plan's masks kept by :func:`pruning_core.training.train`, same
epochs, lr and seeds for every method).

Cases: digits-cnn and lenet-300-100 on scikit-learn's digits at 80 % and 90 % overall weight sparsity
(element); resnet20-cifar trained briefly on synthetic 3x32x32 data at a 50 % MACs cut, filters of each
block's first conv (the filters thinning can remove in independent mode; MACs measured after thinning too).
Before them, the optimiser is timed on 500 parameters x 20 levels in both modes.

The last line is one JSON object: ``{"<model> <target>: <method> one-shot top1": ..., "... fine-tuned top1":
..., "<model> <target>: margin one-shot": optimal minus the best baseline, ...}``.

    .venv/bin/python bench/plans.py [--quick] [--cases digits-cnn,lenet-300-100,resnet20-cifar]
                                    [--finetune-epochs 2] [--interpolate 4] [--threads 2]
                                    [--metric top1|loss]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.utils.data import Subset  # noqa: E402

from pruning_core.datasets import load_dataset, make_loader  # noqa: E402
from pruning_core.metrics import prunable_parameters  # noqa: E402
from pruning_core.models import create_model  # noqa: E402
from pruning_core.plan import (  # noqa: E402
    PlanResult,
    equal_tolerance,
    global_magnitude,
    optimise,
    solve_budget,
    solve_target,
    torch_pruning_global,
    uniform,
)
from pruning_core.plan.search import search  # noqa: E402
from pruning_core.plan.verify import apply_plan, verify  # noqa: E402
from pruning_core.sensitivity import analyze  # noqa: E402
from pruning_core.training import evaluate, train  # noqa: E402

ELEMENT_LEVELS = "0,0.2,0.4,0.5,0.6,0.7,0.75,0.8,0.85,0.9,0.93,0.95,0.97,0.98"
FILTER_LEVELS = "0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9"


@dataclass
class Case:
    model: str
    group: str
    objective: str
    targets: tuple[float, ...]
    train_epochs: int
    lr: float
    levels: str
    params: list[str] | None = None


CASES = {
    "digits-cnn": Case("digits-cnn", "element", "sparsity", (0.8, 0.9), 15, 0.05, ELEMENT_LEVELS),
    "lenet-300-100": Case("lenet-300-100", "element", "sparsity", (0.8, 0.9), 20, 0.05, ELEMENT_LEVELS),
    "resnet20-cifar": Case("resnet20-cifar", "filter", "macs", (0.5,), 6, 0.05, FILTER_LEVELS,
                           [f"layer{s}.{b}.conv1.weight" for s in (1, 2, 3) for b in range(3)]),
}


def time_solver() -> dict[str, float]:
    """Seconds the optimiser takes on 500 parameters x 20 levels (random curves), in both modes."""
    rng = random.Random(0)
    items = []
    for _ in range(500):
        drops = sorted(rng.uniform(0.0, 3.0) for _ in range(19))
        size = rng.randint(100, 100_000)
        items.append([(0.0, 0.0)] + [(d, float(int((k + 1) / 20 * size))) for k, d in enumerate(drops)])
    total = sum(c[-1][1] for c in items)
    start = time.perf_counter()
    budget = solve_budget(items, 50.0)
    mid = time.perf_counter()
    target = solve_target(items, 0.6 * total)
    end = time.perf_counter()
    print(f"optimiser, 500 parameters x 20 levels: budget mode {mid - start:.3f} s (gap {budget.gap / budget.gain:.2e}"
          f" relative), target mode {end - mid:.3f} s (gap {target.gap / target.damage:.2e} relative)")
    return {"optimiser 500x20 budget seconds": round(mid - start, 4),
            "optimiser 500x20 target seconds": round(end - mid, 4)}


def _held_out(dataset: Any, share: float, seed: int = 0) -> tuple[Subset, Subset]:
    """(training part, held-out part) of a dataset, split at random: sensitivity and the measured search run on
    data the model was not trained on, as users run them on a validation split (never on the test split)."""
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    cut = int(round((1 - share) * len(dataset)))
    return Subset(dataset, order[:cut]), Subset(dataset, order[cut:])


def data(case: Case, quick: bool) -> tuple[Any, Any, Any, tuple[int, ...]]:
    """(train loader, sensitivity loader on data held out of the training split, test loader, input shape)."""
    if case.model == "resnet20-cifar":
        n_train, n_val, n_test = (400, 100, 200) if quick else (1000, 200, 400)
        opts = {"shape": (3, 32, 32), "classes": 10, "noise": 6.0}  # noisy enough not to be learnt perfectly
        fit, val = _held_out(load_dataset("synthetic", "train", n=n_train + n_val, **opts).dataset,
                             n_val / (n_train + n_val))
        test_set = load_dataset("synthetic", "test", n=n_test, **opts)
        return (make_loader(fit, batch_size=64, shuffle=True), make_loader(val, batch_size=100),
                make_loader(test_set, batch_size=100), (3, 32, 32))
    fit, val = _held_out(load_dataset("digits", "train").dataset, 0.3)
    if quick:
        val = Subset(val, range(200))
    test_set = load_dataset("digits", "test")
    return (make_loader(fit, batch_size=64, shuffle=True), make_loader(val, batch_size=256),
            make_loader(test_set, batch_size=256), (1, 8, 8))


Method = tuple[Callable[[float], PlanResult], Callable[[PlanResult], PlanResult] | None]


def methods(case: Case, points: list, model: torch.nn.Module, sizes: dict[str, int], example: torch.Tensor,
            interpolate: int, metric: str, sens_loader: Any, evaluations: int, starts: list[PlanResult],
            finetune: Callable[[torch.nn.Module, Any], None] | None, finalists: int) -> dict[str, Method]:
    """Every method as (a function of the target it plans for, a refinement of that plan or None), from the same
    points and damage metric, ``optimal`` last. ``optimal`` is the knapsack's plan improved by the measured search
    on the sensitivity data (never the test data), which also starts from the plans in ``starts`` (the baselines'
    at this target, filled in as they are made) where one measures better there, and whose last choice is the
    finalist that measures best on the sensitivity data after ``finetune`` (one seed of the fine-tuning every
    method gets); ``knapsack`` is the knapsack's plan alone (shown, not a baseline)."""
    common: dict[str, Any] = {"objective": case.objective, "sizes": sizes, "metric": metric}

    def knapsack(t: float) -> PlanResult:
        return optimise(points, interpolate=interpolate, target=t, **common)

    def searched(plan: PlanResult) -> PlanResult:
        return search(plan, points, model, sens_loader, sizes=sizes, interpolate=interpolate, finalists=finalists,
                      evaluations=evaluations, device="cpu", starts=starts, finetune=finetune)

    out: dict[str, Callable[[float], PlanResult]] = {
        "knapsack": knapsack,
        "uniform": lambda t: uniform(points, target=t, **common),
        "equal-tolerance": lambda t: equal_tolerance(points, target=t, **common)}
    if case.group == "element":
        weights = dict(model.named_parameters())
        out["global-magnitude"] = lambda t: global_magnitude(points, weights, target=t, sizes=sizes, metric=metric)
    else:
        out["torch-pruning-global"] = lambda t: torch_pruning_global(points, model, example, target=t, **common)
    out["optimal"] = knapsack
    return {name: (make, searched if name == "optimal" else None) for name, make in out.items()}


def at_target(make: Callable[[float], PlanResult], target: float, case: Case, model: torch.nn.Module,
              test_loader: Any, refine: Callable[[PlanResult], PlanResult] | None = None
              ) -> tuple[PlanResult, PlanResult]:
    """(plan, verified plan) reaching ``target`` as measured: the overall sparsity is exact as predicted; a
    MACs cut is measured after thinning and, where the prediction fell short, the method's target is raised
    (bisection) until the thinned model meets it, so every method is compared at the same measured cut.
    ``refine`` (the measured search) then improves the plan found, once, keeping its target."""
    plan, checked = _at_target(make, target, case, model, test_loader)
    if refine is None:
        return plan, checked
    better, again = _checked(refine(dataclasses.replace(plan, target=target)), case, model, test_loader)
    if case.objective == "macs" and 1 - again.measured["macs_ratio"] < target - 1e-4:
        print(f"    {plan.method}: the searched plan measures short of the {target:.0%} cut; the knapsack's is used")
        return plan, checked
    return better, again


def _checked(plan: PlanResult, case: Case, model: torch.nn.Module, test_loader: Any) -> tuple[PlanResult,
                                                                                                PlanResult]:
    checked = verify(plan, copy.deepcopy(model), test_loader, device="cpu")
    checked.measured["top1"] = checked.measured["pruned"] if plan.metric == "top1" else _top1(plan, model,
                                                                                              test_loader)
    return plan, checked


def _at_target(make: Callable[[float], PlanResult], target: float, case: Case, model: torch.nn.Module,
               test_loader: Any) -> tuple[PlanResult, PlanResult]:
    def measured(t: float) -> tuple[PlanResult, PlanResult, float]:
        plan, checked = _checked(make(t), case, model, test_loader)
        cut = 1 - checked.measured["macs_ratio"] if case.objective == "macs" else checked.measured["sparsity"]
        return plan, checked, cut

    plan, checked, cut = measured(target)
    if case.objective != "macs" or cut >= target - 1e-4:
        return plan, checked
    lo, hi = target, min(0.95, target + 0.1)
    try:
        best = measured(hi)
    except ValueError:  # out of reach for this method
        best = None
    if best is None or best[2] < target - 1e-4:
        print(f"    {plan.method}: no plan reaches a measured {target:.0%} cut; the closest is used")
        return plan, checked
    for _ in range(5):
        mid = (lo + hi) / 2
        trial = measured(mid)
        if trial[2] >= target - 1e-4:
            best, hi = trial, mid
        else:
            lo = mid
    return best[0], best[1]


def _top1(plan: PlanResult, model: torch.nn.Module, test_loader: Any) -> float:
    """One-shot test top1 of the plan (when it was planned on another metric)."""
    clone = copy.deepcopy(model)
    apply_plan(plan, clone, test_loader, device="cpu")
    return evaluate(clone, test_loader, "cpu").top1


def finetuned_top1(plan: PlanResult, model: torch.nn.Module, train_loader: Any, test_loader: Any, epochs: int,
                   lr: float, seeds: int = 3) -> float:
    """Mean test top1 after ``epochs`` of fine-tuning with the plan's masks kept, over ``seeds`` training seeds
    (the same for every method): one seed's order alone moves top1 by a few test samples."""
    scores = []
    for seed in range(seeds):
        clone = copy.deepcopy(model)
        masks = apply_plan(plan, clone, train_loader, device="cpu")
        train(clone, train_loader, epochs=epochs, lr=lr, masks=masks, seed=seed, device="cpu", progress=False)
        scores.append(evaluate(clone, test_loader, "cpu").top1)
    return sum(scores) / len(scores)


def run_case(case: Case, args: argparse.Namespace) -> dict[str, float]:
    train_loader, sens_loader, test_loader, shape = data(case, args.quick)
    model = create_model(case.model, input_shape=shape)
    epochs = max(2, case.train_epochs // 3) if args.quick else case.train_epochs
    start = time.perf_counter()
    train(model, train_loader, epochs=epochs, lr=case.lr, scheduler="cosine", seed=0, device="cpu", progress=False)
    dense = evaluate(model, test_loader, "cpu").top1
    points = analyze(model, sens_loader, levels=case.levels, group=case.group, params=case.params,
                     device="cpu").points
    print(f"\n{case.model}: dense test top1 {dense:.2f} (trained {epochs} epochs), "
          f"{len(points)} sensitivity points ({time.perf_counter() - start:.0f} s)")
    sizes = {n: p.numel() for n, p in prunable_parameters(model)}
    example = next(iter(test_loader))[0][:1]
    results: dict[str, float] = {}
    for target in case.targets:
        label = f"{case.model} {target:.0%}{' MACs' if case.objective == 'macs' else ''}"
        print(f"{label}: {'method':<22} {'sparsity':>8} {'MACs left':>9} {'predicted':>9} {'one-shot':>8} "
              f"{'fine-tuned':>10}")
        rows: dict[str, tuple[float, float]] = {}
        starts: list[PlanResult] = []

        def finetune(clone: torch.nn.Module, masks: Any) -> None:
            train(clone, train_loader, epochs=args.finetune_epochs, lr=case.lr / 5, masks=masks, seed=0,
                  device="cpu", progress=False)

        for method, (make, refine) in methods(case, points, model, sizes, example, args.interpolate,
                                              args.metric, sens_loader, args.evaluations, starts,
                                              finetune if args.finalists else None, args.finalists).items():
            plan, checked = at_target(make, target, case, model, test_loader, refine)
            if method != "knapsack":
                starts.append(plan)
            tuned = finetuned_top1(plan, model, train_loader, test_loader, args.finetune_epochs, case.lr / 5,
                                   args.seeds)
            macs = checked.measured.get("macs_ratio")
            rows[method] = (checked.measured["top1"], tuned)
            print(f"{'':{len(label)}}  {method:<22} {checked.measured['sparsity']:8.4f} "
                  f"{'-' if macs is None else f'{macs:.4f}':>9} {plan.predicted_drop:9.2f} "
                  f"{checked.measured['top1']:8.2f} {tuned:10.2f}")
            results[f"{label}: {method} one-shot top1"] = round(checked.measured["top1"], 2)
            results[f"{label}: {method} fine-tuned top1"] = round(tuned, 2)
        for i, kind in enumerate(("one-shot", "fine-tuned")):
            best = max(v[i] for m, v in rows.items() if m not in ("optimal", "knapsack"))
            results[f"{label}: margin {kind}"] = round(rows["optimal"][i] - best, 2)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples and epochs (a smoke run)")
    parser.add_argument("--cases", default=",".join(CASES), help="comma list of " + ", ".join(CASES))
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--evaluations", type=int, default=300, help="whole-plan evaluations the search may spend")
    parser.add_argument("--seeds", type=int, default=3, help="fine-tuning seeds averaged per plan")
    parser.add_argument("--finalists", type=int, default=6, help="plans of the search's path fine-tuned (seed 0) "
                        "for its last choice, on the sensitivity data; 0: the one-shot choice")
    parser.add_argument("--interpolate", type=int, default=4, help="levels the optimiser adds per measured gap")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--metric", default="top1", help="the damage every method plans on (top1, loss)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = time_solver()
    for name in args.cases.split(","):
        results.update(run_case(CASES[name.strip()], args))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
