"""FastAPI dependencies: settings, a store session per request, the dispatcher, path helpers.

The bearer token is checked by :class:`api.security.TokenAuth` (middleware, deny by default)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi import Path as PathParam
from sqlalchemy.orm import Session

from api.shared.dispatch import Dispatcher
from api.shared.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.session_factory() as session:
        yield session


def get_dispatcher(request: Request) -> Dispatcher:
    return request.app.state.dispatcher


def confined(root: Path, path: Path) -> Path | None:
    """``path`` (relative ones are taken under ``root``) with symlinks and ``..`` resolved, or None
    if the result is not inside ``root``."""
    base = root.resolve()
    try:
        resolved = (base / path).resolve()
    except (OSError, RuntimeError, ValueError):  # symlink loop, NUL byte
        return None
    return resolved if resolved.is_relative_to(base) else None


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]
#: Row ids are 64-bit: say so in the schema, so larger numbers are a 422 rather than a store error.
IdPath = Annotated[int, PathParam(ge=1, le=2**63 - 1)]


def not_found(what: str, key: object) -> HTTPException:
    """The 404 of a row looked up by id, worded the same wherever the lookup is made."""
    return HTTPException(404, f"{what} {key} does not exist")


def get_or_404(session: Session, model: type, key: object, what: str):  # noqa: ANN201 - the ORM row
    row = session.get(model, key)
    if row is None:
        raise not_found(what, key)
    return row
