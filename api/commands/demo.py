"""``prunescope demo``: the whole library path in one command, for a first look without a server.

Trains digits-cnn on the built-in digits data (once; the checkpoint is reused), runs an element
sensitivity sweep over every conv and linear weight, prints the table and writes the Distiller CSV
and the HTML report.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from api.commands.common import resolve_spec_defaults, spec_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train digits-cnn, run a sensitivity sweep, print the table",
                       description=__doc__)
    p.add_argument("--out-dir", default="prunescope-data/demo", help="where the checkpoint, CSV and HTML go")
    spec_option(p, "--levels", "SensitivitySpec", help="sparsity levels (default %(default)s)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from api.cli import main

    resolve_spec_defaults(args)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "digits-cnn.pt"
    if checkpoint.exists():
        print(f"using the trained checkpoint {checkpoint}")
    else:
        code = main(["train", "--model", "digits-cnn", "--dataset", "digits", "--out", str(checkpoint)])
        if code:
            return code
    csv_path = out / "digits-cnn-sensitivity.csv"
    code = main(["sense", "--model", "digits-cnn", "--checkpoint", str(checkpoint), "--dataset", "digits",
                 "--group", "element", "--levels", args.levels, "--csv", str(csv_path),
                 "--html", str(out / "digits-cnn-sensitivity.html")])
    if code == 0:
        print(f"Distiller sensitivity CSV: {csv_path.resolve()}")
    return code
