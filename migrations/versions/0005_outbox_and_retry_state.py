"""Transactional outbox for jobs; retry state on records with pending states

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 06:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.db

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RETRY_STATE_TABLES = ("clusters", "project_namespaces", "cluster_resource_caches")


def upgrade() -> None:
    op.create_table(
        "outbox_jobs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("actor_name", sa.String(length=255), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("delay_ms", sa.Integer(), nullable=True),
        sa.Column("created_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_jobs")),
    )
    op.create_index(op.f("ix_outbox_jobs_created_at"), "outbox_jobs", ["created_at"])
    for table in RETRY_STATE_TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("last_error", sa.String(length=64), nullable=True))
            batch.add_column(
                sa.Column("retry_at", app.core.db.UTCDateTime(timezone=True), nullable=True)
            )
            batch.add_column(
                sa.Column("reconcile_attempts", sa.Integer(), server_default="0", nullable=False)
            )


def downgrade() -> None:
    for table in RETRY_STATE_TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("reconcile_attempts")
            batch.drop_column("retry_at")
            batch.drop_column("last_error")
    op.drop_index(op.f("ix_outbox_jobs_created_at"), table_name="outbox_jobs")
    op.drop_table("outbox_jobs")
