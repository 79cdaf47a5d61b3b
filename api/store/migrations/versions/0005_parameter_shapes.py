"""Parameter shapes for the torch-free API: on every registered model, and per architecture.

``models.shapes`` / ``models.prunable`` hold a model's ``[[name, [dims...]], ...]`` and the names that
globs match, recorded at registration; ``architecture_facts`` holds the same for each architecture,
published by workers (which have torch). Previews and target-sparsity plans read them instead of
building the model. Plain ADD COLUMN and CREATE TABLE: the same on SQLite and PostgreSQL.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("shapes", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("prunable", sa.JSON(), nullable=True))
    op.create_table(
        "architecture_facts",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("shapes", sa.JSON(), nullable=False),
        sa.Column("prunable", sa.JSON(), nullable=False),
        sa.Column("input_shape", sa.JSON(), nullable=False),
        sa.Column("num_classes", sa.Integer(), nullable=True),
        sa.Column("torch_version", sa.String(64), nullable=True),
        sa.Column("published_by", sa.String(255), nullable=True),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("architecture_facts")
    # SQLite drops a column by rebuilding the table: keep 0004's AUTOINCREMENT on the rebuilt one.
    with op.batch_alter_table("models", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_column("prunable")
        batch.drop_column("shapes")
