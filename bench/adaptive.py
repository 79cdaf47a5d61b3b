"""Adaptive evaluation vs the exact sweep, side by side on the same data (issue 20).

Per model (digits-cnn on 8x8 synthetic images, ResNet-20 on 32x32 ones, each trained here for a few epochs),
the exact sweep (fast engine) and the adaptive one (same engine, ``adaptive_tolerance``) run interleaved on the
same test set. Printed: the share of samples the adaptive sweep evaluated (levels that prune something; the
level 0 reuses the baseline in both), the time ratio (exact / adaptive, medians), and per layer the level the
equal-tolerance rule chooses at the tolerance from each sweep. The last line is one JSON object.

    .venv/bin/python bench/adaptive.py [--n 10000] [--tolerance 1] [--levels 0:0.95:0.1] [--models digits,resnet20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from rows import timed  # noqa: E402

from pruning_core.datasets import load_dataset, make_loader  # noqa: E402
from pruning_core.levels import parse_levels  # noqa: E402
from pruning_core.models import create_model  # noqa: E402
from pruning_core.plan.rule import choose_levels  # noqa: E402
from pruning_core.sensitivity import analyze  # noqa: E402
from pruning_core.training import train  # noqa: E402

MODELS = {"digits": ("digits-cnn", (1, 8, 8)), "resnet20": ("resnet20-cifar", (3, 32, 32))}


def trained(arch: str, shape: tuple[int, ...], n: int, epochs: int, device: str) -> torch.nn.Module:
    """The model trained on synthetic data of its input shape (seeded: the same weights every run)."""
    model = create_model(arch)
    data = load_dataset("synthetic", "train", n=n, shape=shape, classes=10)
    train(model, make_loader(data, batch_size=64, shuffle=True, seed=0), epochs=epochs, lr=0.05, seed=0,
          device=device, progress=False)
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models", default="digits,resnet20")
    ap.add_argument("--levels", default="0:0.95:0.1")
    ap.add_argument("--n", type=int, default=10000, help="synthetic test samples")
    ap.add_argument("--train-n", type=int, default=4000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--tolerance", type=float, default=1.0, help="top1 points")
    ap.add_argument("--confidence", type=float, default=0.95)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1, help="rounds, order alternated; medians reported")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    levels = parse_levels(args.levels)
    print(f"device {args.device}, {torch.get_num_threads()} thread(s), levels {levels}, tolerance "
          f"{args.tolerance:g} top1 points at confidence {args.confidence:g}, {args.n} test samples", flush=True)
    summary: dict[str, object] = {}
    for key in args.models.split(","):
        arch, shape = MODELS[key]
        model = trained(arch, shape, args.train_n, args.epochs, args.device)
        loader = make_loader(load_dataset("synthetic", "test", n=args.n, shape=shape, classes=10),
                             batch_size=args.batch_size)
        sides = {"exact": {}, "adaptive": {"adaptive_tolerance": args.tolerance,
                                           "adaptive_confidence": args.confidence}}
        times: dict[str, list[float]] = {k: [] for k in sides}
        runs = {}
        for r in range(args.repeats):
            for side in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
                seconds, runs[side] = timed(lambda kw=sides[side], model=model, loader=loader: analyze(
                    model, loader, levels=levels, device=args.device, **kw), args.device)
                times[side].append(seconds)
        exact, adaptive = runs["exact"].points, runs["adaptive"].points
        measured = [(p, q) for p, q in zip(exact, adaptive, strict=True) if p.sparsity > 0]
        share = sum(q.samples for _, q in measured) / sum(p.samples for p, _ in measured)
        ratio = statistics.median(times["exact"]) / statistics.median(times["adaptive"])
        chosen = {side: choose_levels(r.points, args.tolerance).levels for side, r in runs.items()}
        same = chosen["exact"] == chosen["adaptive"]
        print(f"\n{arch}: baseline top1 {runs['exact'].baseline['top1']:.2f}; samples evaluated {share:.3f} of the "
              f"exact sweep's (x{1 / share:.1f} fewer); time exact/adaptive x{ratio:.2f}; "
              f"{sum(q.approximate for q in adaptive)} of {len(adaptive)} points stopped early", flush=True)
        print(f"  {'layer':<28} {'exact level':>11} {'adaptive':>9} {'samples used':>13}")
        for name in chosen["exact"]:
            used = sum(q.samples for p, q in measured if q.parameter == name)
            full = sum(p.samples for p, q in measured if p.parameter == name)
            print(f"  {name:<28} {chosen['exact'][name]:>11g} {chosen['adaptive'][name]:>9g} "
                  f"{used / full:>13.3f}{'' if chosen['exact'][name] == chosen['adaptive'][name] else '  DIFFERS'}")
        summary[f"{key}: fewer samples"] = round(1 / share, 2)
        summary[f"{key}: time ratio"] = round(ratio, 3)
        summary[f"{key}: same levels"] = same
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
