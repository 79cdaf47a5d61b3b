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
    from api.commands.remote import client

    server = client(args)
    if server.job(args.job).kind == "sensitivity":
        text = server.points_csv(args.job, args.csv)
        if not args.csv:
            sys.stdout.write(text)
        return 0
    print(server.epochs(args.job).to_string(index=False))
    return 0
