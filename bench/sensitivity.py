"""Sensitivity engine vs Distiller's loop, timed side by side on the same machine in one run.

Three ways to measure the same points, run interleaved (order rotated each repeat), same thread count:

- ``distiller``: the baseline, Distiller's ``perform_sensitivity_analysis`` as it works: for every
  (parameter, level) deep-copy the trained model, prune the tensor, evaluate the whole model by
  iterating the DataLoader (its ``test()``, here ``training.evaluate``). Written out below.
- ``plain``: prunescope's reference engine (batches cached in memory, full model per level).
- ``fast``: prunescope's default engine (fx prefix reuse advanced from cut to cut, see sensitivity.py).

All three must give identical points (top1/top5 exactly, loss within 1e-5 relative). The last line
printed is ``{"case: fast vs distiller": ratio, "case: fast vs plain": ratio, ...}`` (median times).

    .venv/bin/python bench/sensitivity.py [--device cpu|cuda] [--levels 0:0.95:0.1] [--n 256] [--repeats 1]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from rows import Row, same_rows, timed  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from pruning_core import pruners  # noqa: E402
from pruning_core.datasets import load_dataset, make_loader  # noqa: E402
from pruning_core.levels import parse_levels  # noqa: E402
from pruning_core.models import create_model  # noqa: E402
from pruning_core.sensitivity import analyze, select_parameters  # noqa: E402
from pruning_core.training import evaluate  # noqa: E402


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--levels", default="0:0.95:0.1")
    ap.add_argument("--n", type=int, default=256, help="synthetic samples for resnet20-cifar")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1, help="torch threads, the same for every side")
    ap.add_argument("--repeats", type=int, default=1, help="rounds, order rotated each round; medians reported")
    ap.add_argument("--cases", default="digits-element,resnet20-element,resnet20-filter")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    levels = parse_levels(args.levels)
    cifar = {"n": args.n, "shape": (3, 32, 32), "classes": 10}
    cases = {"digits-element": ("digits-cnn", "digits", {}, "element"),
             "resnet20-element": ("resnet20-cifar", "synthetic", cifar, "element"),
             "resnet20-filter": ("resnet20-cifar", "synthetic", cifar, "filter")}
    print(f"device {args.device}, {torch.get_num_threads()} thread(s) for every side, levels {levels}; baseline "
          "'distiller' = deep copy + prune + evaluate over the DataLoader per point", flush=True)
    ratios = {}
    for case in args.cases.split(","):
        arch, ds, opts, group = cases[case]
        model = create_model(arch).to(args.device).eval()
        loader = make_loader(load_dataset(ds, "test", **opts), batch_size=args.batch_size)
        example = next(iter(loader))[0][:1].to(args.device)
        names, _ = select_parameters(model, None, group, example)

        def engine(kind: str, model=model, loader=loader, group=group) -> list[Row]:
            points = analyze(model, loader, levels=levels, group=group, engine=kind, device=args.device).points
            return [(p.parameter, p.sparsity, p.top1, p.top5, p.loss) for p in points]

        sides = {"distiller": lambda model=model, loader=loader, names=names, group=group:
                 distiller_loop(model, loader, names, levels, group, args.device),
                 "plain": lambda: engine("plain"), "fast": lambda: engine("fast")}
        order = list(sides)
        times: dict[str, list[float]] = {k: [] for k in sides}
        rows: dict[str, list[Row]] = {}
        for r in range(args.repeats):
            for side in order[r % 3:] + order[:r % 3]:
                seconds, rows[side] = timed(sides[side], args.device)
                times[side].append(seconds)
        same_rows(rows["distiller"], rows["plain"])
        same_rows(rows["plain"], rows["fast"])
        med = {k: statistics.median(v) for k, v in times.items()}
        ratios[f"{case}: fast vs distiller"] = round(med["distiller"] / med["fast"], 3)
        ratios[f"{case}: fast vs plain"] = round(med["plain"] / med["fast"], 3)
        ratios[f"{case}: plain vs distiller"] = round(med["distiller"] / med["plain"], 3)
        print(f"{case}: {len(rows['fast'])} points; distiller {med['distiller']:.2f}s, plain {med['plain']:.2f}s, "
              f"fast {med['fast']:.2f}s; fast x{ratios[f'{case}: fast vs distiller']:.2f} vs distiller, "
              f"x{ratios[f'{case}: fast vs plain']:.2f} vs plain (identical points)", flush=True)
    print(json.dumps(ratios))


if __name__ == "__main__":
    main()
