"""``prunescope results JOB``: a sensitivity job's Distiller CSV, or a train/prune job's epochs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from api.commands.remote import add_server_arg

    p = sub.add_parser("results", help="print or save a job's results")
    p.add_argument("job", type=int)
    p.add_argument("--csv", type=Path, help="write the sensitivity CSV here instead of stdout")
    add_server_arg(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from api.commands.remote import request

    job = request(args, "GET", f"/jobs/{args.job}")
    if job["kind"] == "sensitivity":
        text = request(args, "GET", f"/jobs/{args.job}/points.csv")
        if args.csv:
            args.csv.write_text(text)
        else:
            sys.stdout.write(text)
        return 0
    for e in request(args, "GET", f"/jobs/{args.job}/epochs"):
        print(f"epoch {e['epoch']}: top1={e['top1']} top5={e['top5']} loss={e['loss']} lr={e['lr']}")
    return 0
