"""``prunescope submit KIND``: send a train, sensitivity or prune job to a server."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from api.commands.common import SpecChoices
    from api.commands.remote import add_server_arg

    p = sub.add_parser("submit", help="submit a job to a server",
                       description="Submit a job; options not given take the server's defaults.")
    p.add_argument("kind", choices=["train", "sensitivity", "prune"])
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--dataset-opt", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--levels", help="sensitivity levels, e.g. 0:0.95:0.05")
    p.add_argument("--group", choices=SpecChoices("SensitivitySpec", "group"), metavar="GROUP", help="%(choices)s")
    p.add_argument("--params", nargs="+", help="sensitivity parameter names or globs")
    p.add_argument("--shards", type=int)
    p.add_argument("--samples", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--schedule", type=Path, help="prune: the YAML schedule file")
    p.add_argument("--register-as", help="train/prune: model registry name for the result")
    p.add_argument("--experiment-id", type=int)
    add_server_arg(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from api.client.core import dataset_options
    from api.commands.remote import client

    spec = {"model": args.model, "dataset": args.dataset, "dataset_options": dataset_options(args.dataset_opt)}
    optional = {"levels": args.levels, "group": args.group, "params": args.params, "shards": args.shards,
                "samples": args.samples, "epochs": args.epochs, "lr": args.lr, "register_as": args.register_as}
    spec.update({k: v for k, v in optional.items() if v is not None})
    if args.schedule is not None:
        spec["schedule"] = args.schedule.read_text()
    job = client(args).submit(args.kind, spec, experiment=args.experiment_id)
    json.dump({"id": job.id, "status": job.status}, sys.stdout)
    print()
    return 0
