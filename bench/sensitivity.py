"""Sensitivity engine vs Distiller's loop, timed side by side on the same machine in one run.

Ways to measure the same points, run interleaved (order rotated each repeat), same thread count:

- ``distiller``: the baseline, Distiller's ``perform_sensitivity_analysis`` as it works: for every
  (parameter, level) deep-copy the trained model, prune the tensor, evaluate the whole model by
  iterating the DataLoader (its ``test()``, here ``training.evaluate``). Written out below.
- ``plain``: prunescope's reference engine (batches cached in memory, full model per level).
- ``fast``: prunescope's default engine (fx prefix reuse advanced from cut to cut, see sensitivity.py).
- ``batched`` (``--device cuda`` only, where ``SensitivityAnalysis`` takes ``level_batch``): the fast engine
  with several levels in one forward of the suffix; ``fast`` is then run with ``level_batch=False``.

The whole-machine case (``<model>-element-all-cores``, CPU) compares all cores against all cores: the
engine on one worker process per core with one torch thread each (``pruning_core.parallel``) against
Distiller's loop with torch threads = cores.

All sides must give identical points (top1/top5 exactly, loss within 1e-5 relative). Beside each measured
ratio the reference ratio of work, ``... (MACs)``: the multiply-accumulates one side computes over the other's
(``rows.mac_work``). The last line printed is ``{"case: fast vs distiller": ratio, ...}`` (median times).

    .venv/bin/python bench/sensitivity.py [--device cpu|cuda] [--levels 0:0.95:0.1] [--n 1000] [--repeats 1]
        [--model resnet20-cifar|resnet50 --size 224] [--cases digits-element,element,filter,element-all-cores]
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from rows import Row, mac_work, same_rows, timed  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from pruning_core import pruners  # noqa: E402
from pruning_core.cores import usable_cores  # noqa: E402
from pruning_core.datasets import load_dataset, make_loader  # noqa: E402
from pruning_core.levels import parse_levels  # noqa: E402
from pruning_core.models import create_model, model_info  # noqa: E402
from pruning_core.parallel import analyze_parallel  # noqa: E402
from pruning_core.sensitivity import SensitivityAnalysis, analyze, select_parameters  # noqa: E402
from pruning_core.training import evaluate  # noqa: E402

MODELS = {"resnet20-cifar": "resnet20", "resnet50": "resnet50"}  # --model: the short name its cases carry


def distiller_loop(model: nn.Module, loader: DataLoader, names: list[str], levels: list[float], group: str,
                   device: str) -> list[Row]:
    """Distiller's algorithm, faithfully: a fresh deep copy per point, prune, test over the DataLoader."""
    rows = []
    for name in names:
        for level in levels:
            pruned = copy.deepcopy(model)
            weight = dict(pruned.named_parameters())[name]
            with torch.no_grad():
                if group == "element":
                    mask = pruners.level_mask(weight, level)
                else:
                    mask = pruners.structure_mask(weight, level, "filters" if group == "filter" else "channels")
                weight.mul_(mask)
            r = evaluate(pruned, loader, device=device)
            rows.append((name, level, r.top1, r.top5, r.loss))
    return rows


def with_threads(threads: int, fn: Callable[[], list[Row]]) -> Callable[[], list[Row]]:
    """``fn`` run with ``threads`` torch threads (the bench's count restored after)."""
    def run() -> list[Row]:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return fn()
        finally:
            torch.set_num_threads(before)
    return run


def as_rows(points: list) -> list[Row]:
    return [(p.parameter, p.sparsity, p.top1, p.top5, p.loss) for p in points]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--levels", default="0:0.95:0.1")
    ap.add_argument("--n", type=int, default=1000, help="synthetic samples for --model")
    ap.add_argument("--model", default="resnet20-cifar", choices=sorted(MODELS),
                    help="the model of the element/filter cases (torchvision resnet50: give --size 224)")
    ap.add_argument("--size", type=int, default=None, help="input side of the synthetic images (default the model's)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1, help="torch threads, the same for every side")
    ap.add_argument("--repeats", type=int, default=1, help="rounds, order rotated each round; medians reported")
    ap.add_argument("--cases", default="digits-element,element,filter,element-all-cores",
                    help="digits-element, and for --model: element, filter, element-all-cores (CPU)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    levels = parse_levels(args.levels)
    info = model_info(args.model)
    side = args.size or info.input_shape[-1]
    data = {"n": args.n, "shape": (info.input_shape[0], side, side), "classes": info.num_classes}
    short, cores = MODELS[args.model], usable_cores()
    batched = args.device.startswith("cuda") and \
        "level_batch" in inspect.signature(SensitivityAnalysis.__init__).parameters
    print(f"device {args.device}, {torch.get_num_threads()} thread(s) for every side, levels {levels}, model "
          f"{args.model} on {args.n} synthetic {data['shape']} samples; baseline 'distiller' = deep copy + prune + "
          f"evaluate over the DataLoader per point; all-cores case: {cores} cores", flush=True)
    ratios: dict[str, float] = {}
    for case in args.cases.split(","):
        case = case.removeprefix(f"{short}-")  # resnet20-element names the element case of resnet20-cifar
        whole = case.endswith("-all-cores")
        if whole and args.device != "cpu":
            print(f"{case}: skipped (CPU only: on a GPU the engine keeps one process)", flush=True)
            continue
        group = case.removesuffix("-all-cores").split("-")[-1]
        arch, ds, opts = ("digits-cnn", "digits", {}) if case.startswith("digits-") else \
            (args.model, "synthetic", data)
        label = case if case.startswith("digits-") else f"{short}-{case}"
        model = create_model(arch).to(args.device).eval()
        loader = make_loader(load_dataset(ds, "test", **opts), batch_size=args.batch_size)
        example = next(iter(loader))[0][:1].to(args.device)
        names, _ = select_parameters(model, None, group, example)

        def engine(kind: str, model=model, loader=loader, group=group, **extra) -> list[Row]:
            return as_rows(analyze(model, loader, levels=levels, group=group, engine=kind, device=args.device,
                                   **extra).points)

        def distiller(model=model, loader=loader, names=names, group=group) -> list[Row]:
            return distiller_loop(model, loader, names, levels, group, args.device)

        if whole:
            sides = {"distiller": with_threads(cores, distiller),
                     "fast": lambda model=model, loader=loader, group=group: as_rows(analyze_parallel(
                         model, loader, workers=cores, levels=levels, group=group, device="cpu").points)}
        else:
            sides = {"distiller": distiller, "plain": lambda: engine("plain"),
                     "fast": (lambda: engine("fast", level_batch=False)) if batched else (lambda: engine("fast"))}
            if batched:
                sides["batched"] = lambda: engine("fast", level_batch=True)
        macs = mac_work(model, example, names, levels, group)
        macs["batched"] = macs["fast"]
        order = list(sides)
        times: dict[str, list[float]] = {k: [] for k in sides}
        rows: dict[str, list[Row]] = {}
        for r in range(args.repeats):
            for s in order[r % len(order):] + order[:r % len(order)]:
                seconds, rows[s] = timed(sides[s], args.device)
                times[s].append(seconds)
        for s in order[1:]:
            same_rows(rows["distiller"], rows[s])
        med = {k: statistics.median(v) for k, v in times.items()}
        pairs = [("fast", "distiller")] if whole else \
            [("fast", "distiller"), ("fast", "plain"), ("plain", "distiller")] + \
            ([("batched", "fast"), ("batched", "distiller")] if batched else [])
        shown = []
        for a, b in pairs:
            key = f"{label}: {a} vs {b}" + (f" (all {cores} cores each)" if whole else "")
            ratios[key] = round(med[b] / med[a], 3)
            ratios[f"{key} (MACs)"] = round(macs[b] / macs[a], 3)
            shown.append(f"{a} x{ratios[key]:.2f} vs {b} (MACs x{ratios[f'{key} (MACs)']:.2f})")
        timing = ", ".join(f"{k} {v:.2f}s" for k, v in med.items())
        print(f"{label}: {len(rows['fast'])} points; {timing}; {'; '.join(shown)} (identical points)", flush=True)
    print(json.dumps(ratios))


if __name__ == "__main__":
    main()
