"""The store's change count (migration 0009), read on the event loop for the polled jobs list.

A cached page is served when the count is unchanged, so that read is the list's whole cost and must not
take a request thread: a thread that releases the GIL for its query waits to get it back behind the event
loop (up to the interpreter's switch interval), which held the list near 600 requests/s on two cores with
a p99 of 100 ms. So the count is read where the request already is. On SQLite (WAL: a reader takes no lock)
one connection of its own runs the one-row SELECT in place, with a short busy timeout. On PostgreSQL an
asyncio connection (psycopg's) awaits it under a deadline, so a store that stops answering never holds the
loop. Any failure answers None: the caller then reads the count in its own session, on a thread, as every
other route reads the store.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any

from sqlalchemy import Engine

from api.store.repo import CHANGES

#: How long a read of the count may take before the list reads it the ordinary way.
READ_TIMEOUT_S = 0.5
#: After a failed read, how long requests go straight to the ordinary way (a store that is down is not
#: waited for twice by every request).
RETRY_AFTER_S = 1.0
#: :data:`api.store.repo.CHANGES` as plain SQL, for connections that are not SQLAlchemy's
_QUERY = str(CHANGES.compile(compile_kwargs={"literal_binds": True}))


class ChangeCount:
    """One reader of the change count for an app's store (sqlite3 or psycopg's async connection)."""

    def __init__(self, engine: Engine) -> None:
        self.url = engine.url
        self.dialect = engine.dialect.name
        self._sqlite: sqlite3.Connection | None = None
        self._pg: Any = None  # psycopg.AsyncConnection, bound to the loop it was made on
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failed_at = -RETRY_AFTER_S

    async def read(self) -> int | None:
        """The count, or None where this reader cannot answer at once (the caller's fallback)."""
        if time.monotonic() - self._failed_at < RETRY_AFTER_S:
            return None
        try:
            if self.dialect == "sqlite" and self.url.database not in (None, "", ":memory:"):
                return self._read_sqlite()
            if self.dialect == "postgresql":
                return await asyncio.wait_for(self._read_pg(), READ_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - any failure (a lock, a cut connection, the deadline): the fallback
            self._failed_at = time.monotonic()
            await self.close()
        return None

    def _read_sqlite(self) -> int:
        if self._sqlite is None:
            # a reader of the WAL the app's engine set up; it waits for a lock 20 ms at most
            self._sqlite = sqlite3.connect(self.url.database, timeout=0.02, check_same_thread=False,
                                           isolation_level=None)
        return int(self._sqlite.execute(_QUERY).fetchone()[0])

    async def _read_pg(self) -> int:
        import psycopg

        loop = asyncio.get_running_loop()
        if self._pg is None or self._pg.closed or self._loop is not loop:
            self._pg = None
            conninfo = self.url.set(drivername="postgresql").render_as_string(hide_password=False)
            self._pg = await psycopg.AsyncConnection.connect(conninfo, autocommit=True, connect_timeout=2)
            self._loop = loop
        cursor = await self._pg.execute(_QUERY)
        row = await cursor.fetchone()
        return int(row[0])

    async def close(self) -> None:
        """Drop the connections (the next read makes new ones)."""
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None
        pg, self._pg = self._pg, None
        if pg is not None and not pg.closed:
            try:
                if self._loop is asyncio.get_running_loop():
                    await pg.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass


def change_count(state: Any) -> ChangeCount:
    """The app's reader (``app.state.change_count``), made on first use; closed at shutdown by the app."""
    reader = getattr(state, "change_count", None)
    if reader is None:
        reader = state.change_count = ChangeCount(state.engine)
    return reader
