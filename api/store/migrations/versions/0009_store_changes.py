"""A change counter for what the jobs list shows: ``store_changes`` holds one row whose ``n`` the database
itself raises (triggers) on every insert, update or delete of a job or an experiment, and of a point at
sparsity 0 (the baselines the list's key numbers read). The polled ``GET /jobs`` reads that one number and
serves its cached page while it is unchanged, whichever process (API, worker, a script) wrote.

The count must become visible exactly when the write does, never before (a reader would cache the old rows
under the new count, for good). On SQLite writers are serialised and a trigger runs in the writer's
transaction. On PostgreSQL the trigger is a deferred constraint trigger: it runs at commit, after every lock
the transaction takes, so the one counter row cannot join a lock cycle between transactions writing jobs.

A later migration that rebuilds one of these tables on SQLite (``batch_alter_table`` with a table copy)
drops its triggers and must create them again (:func:`create_triggers`); ``tests/service/test_store.py``
checks that the count moves.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: (table, event, SQL condition on the row or None): the writes that change what the jobs list shows.
WATCHED = [(table, event, None) for table in ("jobs", "experiments") for event in ("INSERT", "UPDATE", "DELETE")] + [
    ("sensitivity_points", "INSERT", "NEW.sparsity = 0"),
    ("sensitivity_points", "UPDATE", "NEW.sparsity = 0 OR OLD.sparsity = 0"),
    ("sensitivity_points", "DELETE", "OLD.sparsity = 0"),
]
_BUMP = "UPDATE store_changes SET n = n + 1 WHERE id = 1"


def _name(table: str, event: str) -> str:
    return f"{table}_{event.lower()}_changes"


def create_triggers() -> None:
    """The triggers of :data:`WATCHED` on this dialect."""
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        # the schema it is made in, whatever search_path the writing session has
        op.execute("CREATE OR REPLACE FUNCTION prunescope_store_changed() RETURNS trigger LANGUAGE plpgsql "
                   f"SET search_path FROM CURRENT AS $$ BEGIN {_BUMP}; RETURN NULL; END $$")
    for table, event, when in WATCHED:
        condition = f" WHEN ({when})" if when else ""
        if postgres:
            op.execute(f"CREATE CONSTRAINT TRIGGER {_name(table, event)} AFTER {event} ON {table} "
                       f"DEFERRABLE INITIALLY DEFERRED FOR EACH ROW{condition} "
                       "EXECUTE FUNCTION prunescope_store_changed()")
        else:
            op.execute(f"CREATE TRIGGER {_name(table, event)} AFTER {event} ON {table} FOR EACH ROW{condition} "
                       f"BEGIN {_BUMP}; END")


def upgrade() -> None:
    op.create_table("store_changes", sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
                    sa.Column("n", sa.BigInteger(), nullable=False))
    op.execute("INSERT INTO store_changes (id, n) VALUES (1, 0)")
    create_triggers()


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for table, event, _ in WATCHED:
        op.execute(f"DROP TRIGGER IF EXISTS {_name(table, event)}" + (f" ON {table}" if postgres else ""))
    if postgres:
        op.execute("DROP FUNCTION IF EXISTS prunescope_store_changed()")
    op.drop_table("store_changes")
