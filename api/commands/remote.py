"""Shared by ``submit``, ``status`` and ``results``: the Python client, pointed at a running server."""

from __future__ import annotations

import argparse
import os
from typing import Any


def add_server_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", default=os.environ.get("PRUNESCOPE_URL", "http://127.0.0.1:8000"),
                        help="server URL (default $PRUNESCOPE_URL or http://127.0.0.1:8000); "
                             "the token comes from $PRUNESCOPE_TOKEN")


def client(args: argparse.Namespace) -> Any:
    """An ``api.client.Client`` for --server: one HTTP code path for the CLI and notebooks."""
    from api.client import Client

    return Client(args.server, progress=False)
