"""Shared by ``submit``, ``status`` and ``results``: talking to a running server over HTTP."""

from __future__ import annotations

import argparse
import os
from typing import Any


def add_server_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", default=os.environ.get("PRUNESCOPE_URL", "http://127.0.0.1:8000"),
                        help="server URL (default $PRUNESCOPE_URL or http://127.0.0.1:8000)")


def request(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> Any:
    """One call to /api/v1; an error response becomes a ValueError carrying the server's message."""
    import httpx

    headers = {}
    if token := os.environ.get("PRUNESCOPE_TOKEN"):
        headers["Authorization"] = f"Bearer {token}"
    try:
        resp = httpx.request(method, f"{args.server.rstrip('/')}/api/v1{path}", headers=headers, timeout=60,
                             **kwargs)
    except httpx.HTTPError as exc:
        raise ValueError(f"cannot reach the server at {args.server}: {exc}") from None
    if resp.status_code >= 400:
        try:
            detail = resp.json().get("detail")
        except ValueError:
            detail = resp.text
        raise ValueError(f"server answered {resp.status_code}: {detail}")
    return resp.json() if "json" in resp.headers.get("content-type", "") else resp.text
