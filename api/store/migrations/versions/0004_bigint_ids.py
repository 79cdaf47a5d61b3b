"""64-bit ids on both stores, never reused.

PostgreSQL: every id and foreign-key column (and its sequence) becomes BIGINT, as OpenAPI promises.
SQLite: INTEGER PRIMARY KEY is the 64-bit rowid already, but without AUTOINCREMENT a deleted
highest id is handed out again (a bookmark or a downloaded ``sensitivity-8.csv`` would then name
another job); the tables are rebuilt with AUTOINCREMENT. ``api.store.db.migrate`` turns SQLite's
foreign keys off around migrations so these rebuilds cannot cascade-delete anything.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: table -> its id-holding columns (the primary key first, then foreign keys).
ID_COLUMNS = {
    "experiments": ("id",),
    "jobs": ("id", "experiment_id"),
    "artifacts": ("id", "job_id"),
    "models": ("id", "artifact_id", "source_job_id"),
    "datasets": ("id",),
    "job_shards": ("job_id",),
    "sensitivity_points": ("id", "job_id"),
    "epoch_metrics": ("id", "job_id"),
}
SURROGATE_KEYED = tuple(t for t, cols in ID_COLUMNS.items() if cols[0] == "id")


def _postgresql(to: type[sa.types.TypeEngine], sequence_type: str) -> None:
    for table, columns in ID_COLUMNS.items():
        for column in columns:
            op.alter_column(table, column, type_=to(), existing_type=sa.Integer() if to is sa.BigInteger
                            else sa.BigInteger())
        if columns[0] == "id":
            op.execute(sa.text(f"ALTER SEQUENCE IF EXISTS {table}_id_seq AS {sequence_type}"))


def _sqlite(autoincrement: bool) -> None:
    for table in SURROGATE_KEYED:
        with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}):
            pass


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        _postgresql(sa.BigInteger, "bigint")
    elif dialect == "sqlite":
        _sqlite(True)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        _postgresql(sa.Integer, "integer")
    elif dialect == "sqlite":
        _sqlite(False)
