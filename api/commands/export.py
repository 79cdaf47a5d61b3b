"""``prunescope export mlflow|tensorboard JOB``: a job from a server into an experiment tracker.

Through the client like ``status`` and ``results``: the job is read from --server and written from this
process, so the tracking URI or folder is this machine's (see docs/export.md).
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from api.commands.remote import add_server_arg

    p = sub.add_parser("export", help="export a job to MLflow or TensorBoard",
                       description="Log a job (params, sensitivity points with sparsity per-mille as the step, "
                       "epochs, the CSV, the spec's YAML, the HTML report, checkpoints) to an experiment tracker.")
    kinds = p.add_subparsers(dest="tracker", metavar="TRACKER", required=True)
    m = kinds.add_parser("mlflow", help="log the job as one MLflow run")
    m.add_argument("job", type=int)
    m.add_argument("--tracking-uri", required=True, help="MLflow tracking URI (http://host:5000, sqlite:///m.db)")
    m.add_argument("--experiment", default=None, help="MLflow experiment (default: prunescope)")
    m.add_argument("--on-server", action="store_true",
                   help="let the server export (POST /jobs/{id}/export/mlflow) instead of this process")
    add_server_arg(m)
    m.set_defaults(handler=run_mlflow)
    t = kinds.add_parser("tensorboard", help="write the job as TensorBoard event files")
    t.add_argument("job", type=int)
    t.add_argument("dir", help="log directory (the run is a folder inside it)")
    add_server_arg(t)
    t.set_defaults(handler=run_tensorboard)


def run_mlflow(args: argparse.Namespace) -> int:
    from api.commands.remote import client

    try:
        run = client(args).export_mlflow(args.job, args.tracking_uri, args.experiment, on_server=args.on_server)
    except ImportError as exc:  # the optional extra is missing: its message names it
        raise ValueError(str(exc)) from None
    print(f"job {args.job} -> MLflow run {run['run_id']} (experiment {run['experiment_id']}, {run['tracking_uri']})")
    return 0


def run_tensorboard(args: argparse.Namespace) -> int:
    from api.commands.remote import client
    from api.export.tensorboard import NO_IMAGE

    try:
        out = client(args).export_tensorboard(args.job, args.dir)
    except ImportError as exc:
        raise ValueError(str(exc)) from None
    print(f"job {args.job} -> TensorBoard {out['logdir']}" + ("" if out["image"] else f" ({NO_IMAGE})"))
    return 0
