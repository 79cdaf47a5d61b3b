"""FastAPI dependencies: settings, a store session per request, the dispatcher, path helpers.

The bearer token is checked by :class:`api.security.TokenAuth` (middleware, deny by default)."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

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


def _query_fields(dependant: Any) -> Iterator[Any]:
    """The query parameters of a route and of every dependency it has (FastAPI's ``Dependant`` tree)."""
    yield from dependant.query_params
    for sub in dependant.dependencies:
        yield from _query_fields(sub)


def _is_sequence(annotation: Any) -> bool:
    """``list[int]``, ``list[str] | None``...: a query parameter that may be repeated."""
    kinds = (list, tuple, set, frozenset)
    return typing.get_origin(annotation) in kinds or any(typing.get_origin(a) in kinds
                                                         for a in typing.get_args(annotation))


async def single_valued_query(request: Request) -> None:
    """A query parameter that takes one value, given twice (``?q=a&q=b``), is a 422 naming it: otherwise the
    last value would win silently. Lists (``/compare?jobs=2&jobs=5``) may repeat, as they declare. Async
    because it does no I/O: a sync dependency would cost every request a trip to a worker thread."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None or not request.query_params:
        return
    single = {f.alias for f in _query_fields(dependant) if not _is_sequence(f.field_info.annotation)}
    repeated = sorted(k for k in set(request.query_params.keys())
                      if k in single and len(request.query_params.getlist(k)) > 1)
    if repeated:
        raise HTTPException(422, "; ".join(f"{k} (query): given {len(request.query_params.getlist(k))} times; it "
                                           "takes one value" for k in repeated))
