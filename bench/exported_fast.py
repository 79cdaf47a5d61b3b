"""Sensitivity on a torch.export program: the fast engine vs the plain one, timed side by side in one run.

Each network is exported with ``torch.export`` and loaded back with ``pruning_core.exported.load_program``
(the static scan, then the layers recovered from the ATen graph). Both engines run on the loaded program,
interleaved (order rotated each repeat), same thread count; the plain engine on the original module is
measured once as the reference the points must equal (top1/top5 exactly, loss within 1e-5 relative).

- ``skipnet``: a network in no catalogue (depthwise conv, concatenated skip, LayerNorm, GELU, linear head);
- ``resnet20``: ``resnet20-cifar`` from the catalogue, exported (its residual adds and BatchNorm).

The last line printed is ``{"case: fast vs plain": ratio, ...}`` (median times, plain / fast).

    .venv/bin/python bench/exported_fast.py [--device cpu|cuda] [--levels 0:0.95:0.1] [--n 256] [--repeats 1]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from rows import Row, same_rows, timed  # noqa: E402
from torch import nn  # noqa: E402

from pruning_core.datasets import load_dataset, make_loader  # noqa: E402
from pruning_core.exported import export_model, load_program  # noqa: E402
from pruning_core.levels import parse_levels  # noqa: E402
from pruning_core.models import create_model  # noqa: E402
from pruning_core.sensitivity import analyze  # noqa: E402


class SkipNet(nn.Module):
    """The acceptance test's kind of network, wide enough for the timing to mean something."""

    def __init__(self, width: int = 32, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.dw = nn.Conv2d(width, width, 3, padding=1, groups=width)
        self.pw = nn.Conv2d(2 * width, 2 * width, 1)
        self.conv = nn.Conv2d(2 * width, 2 * width, 3, padding=1, stride=2)
        self.norm = nn.LayerNorm(2 * width)
        self.head = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.bn(self.stem(x)))
        b = F.gelu(self.dw(a))
        c = F.relu(self.conv(F.gelu(self.pw(torch.cat([a, b], 1)))))
        return self.head(self.norm(c.mean((2, 3))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--levels", default="0:0.95:0.1")
    ap.add_argument("--n", type=int, default=256, help="synthetic samples")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1, help="torch threads, the same for every side")
    ap.add_argument("--repeats", type=int, default=1, help="rounds, order rotated each round; medians reported")
    ap.add_argument("--cases", default="skipnet-element,skipnet-filter,resnet20-element,resnet20-filter")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    levels = parse_levels(args.levels)
    data = load_dataset("synthetic", "test", n=args.n, shape=(3, 32, 32), classes=10)
    loader = make_loader(data, batch_size=args.batch_size)
    builders = {"skipnet": SkipNet, "resnet20": lambda: create_model("resnet20-cifar")}
    print(f"device {args.device}, {torch.get_num_threads()} thread(s) for every side, levels {levels}, "
          f"{args.n} samples; both engines on the loaded .pt2 program", flush=True)
    ratios = {}
    for case in args.cases.split(","):
        arch, group = case.split("-")
        original = builders[arch]().eval()
        with torch.no_grad():  # BatchNorm statistics away from their defaults, as a trained model's are
            original.train()(next(iter(loader))[0])
            original.eval()
        buf = io.BytesIO()
        export_model(original, next(iter(loader))[0][:2], buf)
        program = load_program(io.BytesIO(buf.getvalue())).to(args.device)

        def engine(kind: str, model: nn.Module, group: str = group) -> list[Row]:
            points = analyze(model, loader, levels=levels, group=group, engine=kind, device=args.device).points
            return [(p.parameter, p.sparsity, p.top1, p.top5, p.loss) for p in points]

        reference = engine("plain", original.to(args.device))
        sides = {"plain": lambda program=program: engine("plain", program),
                 "fast": lambda program=program: engine("fast", program)}
        order = list(sides)
        times: dict[str, list[float]] = {k: [] for k in sides}
        rows: dict[str, list[Row]] = {}
        for r in range(args.repeats):
            for side in order[r % 2:] + order[:r % 2]:
                seconds, rows[side] = timed(sides[side], args.device)
                times[side].append(seconds)
        same_rows(reference, rows["plain"])
        same_rows(reference, rows["fast"])
        med = {k: statistics.median(v) for k, v in times.items()}
        ratios[f"{case}: fast vs plain"] = round(med["plain"] / med["fast"], 3)
        print(f"{case}: {len(rows['fast'])} points; plain {med['plain']:.2f}s, fast {med['fast']:.2f}s; "
              f"fast x{ratios[f'{case}: fast vs plain']:.2f} vs plain (points equal to the original module's)",
              flush=True)
    print(json.dumps(ratios))


if __name__ == "__main__":
    main()
