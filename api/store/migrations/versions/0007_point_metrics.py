"""Sensitivity points: ``metrics``, the task's metrics beyond top1/top5/loss (a language model's perplexity,
a custom metric's values) as a JSON object; NULL for the points stored before (classification, which has
none). A nullable column: ADD COLUMN on both stores (the batch rebuilds no SQLite table for it).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sensitivity_points") as batch:
        batch.add_column(sa.Column("metrics", sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sensitivity_points") as batch:
        batch.drop_column("metrics")
