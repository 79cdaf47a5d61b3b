"""The schema and its operations (SQLAlchemy 2 + Alembic); imports no FastAPI and no torch."""

from api.store.db import make_engine, make_session_factory, migrate

__all__ = ["make_engine", "make_session_factory", "migrate"]
