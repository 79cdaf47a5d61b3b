"""``prunescope status JOB``: a job's state and progress from a server."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from api.commands.remote import add_server_arg

    p = sub.add_parser("status", help="show a job's status")
    p.add_argument("job", type=int)
    add_server_arg(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from api.commands.remote import client

    job = client(args).job(args.job)
    print(f"job {job.id} ({job.kind}): {job.status}  {job.progress_done}/{job.progress_total}"
          f"  device={job.device or '-'}")
    for shard in job.shards:
        print(f"  shard {shard['index']}: {shard['status']} on {shard['worker'] or '-'}")
    if job.error:
        print(f"  error: {job.error}")
    return 0 if job.status != "failed" else 1
