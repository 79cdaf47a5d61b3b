"""Sensitivity points: ``latency_ms`` (latency=True sweeps) and nullable metrics (early-stopped levels).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

METRICS = ("top1", "top5", "loss")


def upgrade() -> None:
    with op.batch_alter_table("sensitivity_points") as batch:
        batch.add_column(sa.Column("latency_ms", sa.Double(), nullable=True))
        for name in METRICS:
            batch.alter_column(name, existing_type=sa.Double(), nullable=True)


def downgrade() -> None:
    # unmeasured (early-stopped) points have no metrics the old schema could hold
    op.execute(sa.text("DELETE FROM sensitivity_points WHERE top1 IS NULL OR top5 IS NULL OR loss IS NULL"))
    with op.batch_alter_table("sensitivity_points") as batch:
        batch.drop_column("latency_ms")
        for name in METRICS:
            batch.alter_column(name, existing_type=sa.Double(), nullable=False)
