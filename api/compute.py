"""Run a ``worker.helpers`` function in a child process: pruning_core imports torch, the API must not."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from fastapi import HTTPException


def run_helper(name: str, payload: dict[str, Any], timeout_s: float = 120) -> dict[str, Any]:
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "worker.helpers", name], input=json.dumps(payload), capture_output=True,
            text=True, timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        raise HTTPException(503, f"{name}: the helper process took longer than {timeout_s:g} s") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise HTTPException(503, f"{name}: the helper process failed: {last}")
    return json.loads(proc.stdout)
