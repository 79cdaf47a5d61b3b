"""FastAPI dependencies: settings, a store session per request, the dispatcher, the bearer token."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

from api.dispatch import Dispatcher
from api.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.session_factory() as session:
        yield session


def get_dispatcher(request: Request) -> Dispatcher:
    return request.app.state.dispatcher


def require_token(request: Request) -> None:
    """With ``PRUNESCOPE_TOKEN`` set, every request needs ``Authorization: Bearer <token>``."""
    token = request.app.state.settings.token
    if not token:
        return
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip(), token):
        raise HTTPException(401, "Authorization: a valid 'Bearer <PRUNESCOPE_TOKEN>' header is required",
                            headers={"WWW-Authenticate": "Bearer"})


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]


def get_or_404(session: Session, model: type, key: object, what: str):  # noqa: ANN201 - the ORM row
    row = session.get(model, key)
    if row is None:
        raise HTTPException(404, f"{what} {key} does not exist")
    return row
