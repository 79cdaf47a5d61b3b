"""Plain vs fast sensitivity engine, timed side by side on the same machine in one run.

Both engines must give identical points (top1/top5 exactly, loss within 1e-6 relative); the last
line printed is ``{"case name": plain_seconds / fast_seconds, ...}``.

    .venv/bin/python bench/sensitivity_speed.py [--device cpu|cuda] [--levels 0:0.95:0.1] [--n 256]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from pruning_core.datasets import load_dataset, make_loader  # noqa: E402
from pruning_core.models import create_model  # noqa: E402
from pruning_core.sensitivity import analyze  # noqa: E402


def same_points(a: list, b: list) -> None:
    """Raise unless the two runs measured the same points."""
    assert len(a) == len(b), (len(a), len(b))
    for p, q in zip(a, b, strict=True):
        key = ("parameter", "sparsity", "top1", "top5", "nnz", "macs")
        assert [getattr(p, k) for k in key] == [getattr(q, k) for k in key], (p, q)
        assert abs(p.loss - q.loss) <= 1e-6 * abs(p.loss), (p.loss, q.loss)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--levels", default="0:0.95:0.1")
    ap.add_argument("--n", type=int, default=256, help="synthetic samples for resnet20-cifar")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cases = [("digits-cnn/digits element", "digits-cnn", "digits", {}, "element"),
             ("resnet20-cifar/synthetic element", "resnet20-cifar", "synthetic",
              {"n": args.n, "shape": (3, 32, 32), "classes": 10}, "element"),
             ("resnet20-cifar/synthetic filter", "resnet20-cifar", "synthetic",
              {"n": args.n, "shape": (3, 32, 32), "classes": 10}, "filter")]
    ratios = {}
    for name, arch, ds, opts, group in cases:
        model = create_model(arch)
        loader = make_loader(load_dataset(ds, "test", **opts), batch_size=128)
        times, results = {}, {}
        for engine in ("plain", "fast"):
            start = time.perf_counter()
            results[engine] = analyze(model, loader, levels=args.levels, group=group, engine=engine,
                                      device=args.device)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times[engine] = time.perf_counter() - start
        same_points(results["plain"].points, results["fast"].points)
        ratios[name] = round(times["plain"] / times["fast"], 3)
        print(f"{name}: {len(results['fast'].points)} points, plain {times['plain']:.2f}s, "
              f"fast {times['fast']:.2f}s, x{ratios[name]:.2f} (identical points)", flush=True)
    print(json.dumps(ratios))


if __name__ == "__main__":
    main()
