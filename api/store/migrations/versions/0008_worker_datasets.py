"""Worker capabilities: ``datasets``, the operators' datasets (``prunescope.datasets`` entry points) a worker
can load, as ``[{name, task}]``, so the API accepts a job on one while a live worker publishes it. Empty for
the rows stored before. A column with a server default: ADD COLUMN on both stores.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("worker_capabilities") as batch:
        batch.add_column(sa.Column("datasets", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("worker_capabilities") as batch:
        batch.drop_column("datasets")
