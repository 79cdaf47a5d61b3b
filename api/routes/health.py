"""Liveness with the state of the store and of the broker.

Public even with ``PRUNESCOPE_TOKEN`` set (probes carry no token), so URL credentials are masked."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Response
from sqlalchemy import text

from api.deps import DispatcherDep, SessionDep

router = APIRouter(tags=["health"])
_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]*@")


def redact(text: str) -> str:
    """``redis://:secret@host`` -> ``redis://***@host``."""
    return _CREDENTIALS.sub("***@", text)


@router.get("/healthz")
def healthz(session: SessionDep, dispatcher: DispatcherDep, response: Response) -> dict[str, Any]:
    try:
        session.execute(text("SELECT 1"))
        store = {"ok": True, "dialect": session.get_bind().dialect.name}
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        store = {"ok": False, "error": redact(str(exc))}
    ok, detail = dispatcher.healthy()
    broker = {"ok": ok, "kind": dispatcher.name, "detail": redact(detail)}
    healthy = store["ok"] and ok
    if not healthy:
        response.status_code = 503
    return {"ok": healthy, "store": store, "broker": broker}
