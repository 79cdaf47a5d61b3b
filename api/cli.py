"""The ``prunescope`` command line.

Each command lives in ``api/commands/<name>.py`` with a ``register(subparsers)`` function; heavy
imports (torch, pruning_core) happen inside the command's handler so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ["demo", "train", "sense", "prune", "plan", "serve", "worker", "submit", "status", "results", "export"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prunescope",
        description="Sensitivity analysis and pruning for PyTorch models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"api.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"api.commands.{name}":
                raise
            continue  # a command not built yet
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    from api.client.errors import PrunescopeError

    try:
        return int(args.handler(args) or 0)
    except (ValueError, FileNotFoundError, PrunescopeError) as exc:
        print(f"prunescope {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
