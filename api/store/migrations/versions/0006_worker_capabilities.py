"""What each worker can build, published by the worker itself: ``worker_capabilities``.

One row per worker process (``host:pid``, or ``embedded@host:pid``): its devices, torch and timm versions,
the plugin architectures it can build (``prunescope.models`` entry points, with input shape and class count)
and the ``timm/<name>`` names. The worker refreshes ``refreshed_at`` periodically; the API counts a worker as
live while that is younger than ``PRUNESCOPE_HEARTBEAT_STALE_S`` (and ``stopped_at`` is unset: a worker
that stops says so) and accepts a job naming an architecture
beyond the built-in catalogue only if a live worker publishes it. ``fingerprint`` (host, versions, entry
points) lets an embedded server reuse a dead predecessor's row instead of importing torch to rebuild it.
Plain CREATE TABLE: the same on SQLite and PostgreSQL.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "worker_capabilities",
        sa.Column("worker", sa.String(255), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("devices", sa.JSON(), nullable=False),
        sa.Column("torch_version", sa.String(64), nullable=True),
        sa.Column("timm_version", sa.String(64), nullable=True),
        sa.Column("architectures", sa.JSON(), nullable=False),
        sa.Column("timm_models", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
    )
    with op.batch_alter_table("worker_capabilities") as batch:
        batch.create_index(batch.f("ix_worker_capabilities_fingerprint"), ["fingerprint"], unique=False)
        batch.create_index(batch.f("ix_worker_capabilities_refreshed_at"), ["refreshed_at"], unique=False)


def downgrade() -> None:
    op.drop_table("worker_capabilities")
