"""An ImageFolder sweep before and after issue 20's decoded-image cache, timed side by side in one run.

The test writes ``--n`` JPEG images (PIL, ``--side`` x 3/4 ``--side`` pixels, ``--classes`` folders) in a
temporary ImageFolder tree, then runs the same sensitivity sweep (``--model``, ``--levels``, every prunable
weight or ``--params``) over them three ways, interleaved (order rotated each repeat), with one memory budget
for all: the float32 batches do not fit it, their uint8 pixels do (ImageNet's validation set at 224: 30 GB
against 7.5 GB):

- ``before``: how ``imagefolder`` was read: torchvision's ImageFolder with Resize, CenterCrop, ToTensor and
  Normalize per sample, ``num_workers=0``; the batches do not fit, so every pass decodes every JPEG again.
- ``after, 0 workers``: ``load_dataset('imagefolder')`` and ``make_loader(workers=0)``: each image decoded once
  per sweep, its uint8 pixels held, normalised per batch on the device.
- ``after``: the same with ``make_loader``'s default workers (one per spare CPU) and pinned memory on CUDA.

Every image's decodes are counted (its image-open function wrapped, ``image_cache.DecodeCounts``); all three
must give identical points. The last line printed is one JSON object: the ratios and the decode counts.

    .venv/bin/python bench/imagefolder.py [--n 400] [--side 400] [--size 32] [--device cpu|cuda]
        [--params 'layer1.*'] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from rows import Row, timed  # noqa: E402

from pruning_core.datasets import _IMAGENET_MEAN, _IMAGENET_STD, load_dataset, make_loader  # noqa: E402
from pruning_core.image_cache import DecodeCounts  # noqa: E402
from pruning_core.models import create_model  # noqa: E402
from pruning_core.sensitivity import analyze  # noqa: E402


def write_images(root: Path, n: int, side: int, classes: int) -> None:
    """``n`` JPEGs, ``side`` x 3/4 ``side``: a class-tinted gradient plus noise (what a photo costs to decode)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    h, w = side * 3 // 4, side
    ramp = np.linspace(0, 1, w, dtype=np.float32)[None, :, None] * np.linspace(0.5, 1, h, dtype=np.float32)[:, None,
                                                                                                              None]
    for i in range(n):
        c = i % classes
        folder = root / "test" / f"class{c:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        tint = np.array([40 + 20 * c % 200, 200 - 15 * c % 180, 90 + 30 * c % 150], dtype=np.float32)
        pixels = ramp * tint + rng.normal(0, 25, (h, w, 3)).astype(np.float32) + 30
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i:05d}.jpg", quality=90)


def before_loader(root: Path, size: int, batch_size: int):
    """``imagefolder`` as it was read before: the whole transform per sample, in the sweep's process."""
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor(),
                                    transforms.Normalize(_IMAGENET_MEAN, _IMAGENET_STD)])
    folder = datasets.ImageFolder(str(root / "test"), transform=transform)
    return make_loader(folder, batch_size=batch_size, workers=0, pin_memory=False), DecodeCounts(folder)


def after_loader(root: Path, size: int, batch_size: int, workers: int | None):
    bundle = load_dataset("imagefolder", "test", root=str(root), size=size)
    return make_loader(bundle, batch_size=batch_size, workers=workers), DecodeCounts(bundle.dataset)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400, help="JPEG images written")
    ap.add_argument("--side", type=int, default=400, help="their width (height 3/4 of it), before Resize")
    ap.add_argument("--size", type=int, default=32, help="the imagefolder size option (the model's input side)")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--model", default="resnet20-cifar")
    ap.add_argument("--levels", default="0,0.5,0.9")
    ap.add_argument("--params", default=None, help="comma-separated names or globs (default: every prunable weight)")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads, the same for every side")
    ap.add_argument("--repeats", type=int, default=1, help="rounds, order rotated each round; medians reported")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    params = args.params.split(",") if args.params else None
    pixels = args.n * 3 * args.size * args.size
    # the held batches get half the budget: room for the uint8 pixels (+ labels) twice, not for the floats
    budget_mb = 2 * 2 * (pixels + 8 * args.n) / 2**20
    model = create_model(args.model, num_classes=args.classes).to(args.device).eval()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_images(root, args.n, args.side, args.classes)
        loaders = {"before": lambda: before_loader(root, args.size, args.batch_size),
                   "after, 0 workers": lambda: after_loader(root, args.size, args.batch_size, 0),
                   "after": lambda: after_loader(root, args.size, args.batch_size, None)}
        print(f"{args.n} JPEGs {args.side}x{args.side * 3 // 4} -> {args.size}x{args.size}, {args.model} on "
              f"{args.device}, {torch.get_num_threads()} thread(s), levels {args.levels}, memory_budget_mb "
              f"{budget_mb:.2f} (float32 batches {4 * pixels / 2**20:.2f} MiB do not fit, uint8 "
              f"{pixels / 2**20:.2f} MiB do)", flush=True)
        order = list(loaders)
        times: dict[str, list[float]] = {k: [] for k in loaders}
        rows: dict[str, list[Row]] = {}
        decodes: dict[str, list[int]] = {}
        workers: dict[str, int] = {}
        for r in range(args.repeats):
            for side in order[r % 3:] + order[:r % 3]:
                loader, counts = loaders[side]()
                workers[side] = loader.num_workers

                def sweep(loader=loader) -> list[Row]:
                    points = analyze(model, loader, levels=args.levels, params=params, device=args.device,
                                     memory_budget_mb=budget_mb).points
                    return [(p.parameter, p.sparsity, p.top1, p.top5, p.loss) for p in points]

                seconds, rows[side] = timed(sweep, args.device)
                times[side].append(seconds)
                decodes[side] = counts.per_image()
                del loader  # its worker processes end with it
    identical = rows["before"] == rows["after, 0 workers"] == rows["after"]
    assert identical, "the sweeps measured different points"
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{len(rows['before'])} points, identical on every side")
    print(f"{'side':<18} {'workers':>7} {'seconds':>8} {'decodes/image':>13} {'speed-up':>8}")
    for side in order:
        low, high = min(decodes[side]), max(decodes[side])
        shown = str(low) if low == high else f"{low}-{high}"
        print(f"{side:<18} {workers[side]:>7} {med[side]:>8.2f} {shown:>13} {med['before'] / med[side]:>7.2f}x")
    result = {"imagefolder sweep: after vs before": round(med["before"] / med["after"], 3),
              "imagefolder sweep: after (0 workers) vs before": round(med["before"] / med["after, 0 workers"], 3),
              "seconds before": round(med["before"], 3), "seconds after": round(med["after"], 3),
              "decodes per image before": max(decodes["before"]), "decodes per image after": max(decodes["after"]),
              "workers after": workers["after"], "points": len(rows["before"]), "identical points": identical}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
