"""project namespace status and the cluster resources cache

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 13:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.db

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("project_namespaces") as batch:
        batch.add_column(
            sa.Column("cluster_role", sa.String(length=253), server_default="admin", nullable=False)
        )
        batch.add_column(
            sa.Column("status", sa.String(length=32), server_default="provisioning", nullable=False)
        )
        batch.add_column(sa.Column("error_code", sa.String(length=64), nullable=True))
        batch.add_column(
            sa.Column("last_synced_at", app.core.db.UTCDateTime(timezone=True), nullable=True)
        )
    op.create_table(
        "cluster_resource_caches",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("cluster_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("namespace", sa.String(length=63), nullable=False),
        sa.Column("items", sa.JSON(), nullable=True),
        sa.Column("truncated", sa.Boolean(), nullable=False),
        sa.Column("read_at", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("refresh_requested_at", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_at", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["cluster_id"],
            ["clusters.id"],
            name=op.f("fk_cluster_resource_caches_cluster_id_clusters"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cluster_resource_caches")),
        sa.UniqueConstraint(
            "cluster_id",
            "kind",
            "namespace",
            name=op.f("uq_cluster_resource_caches_cluster_id_kind_namespace"),
        ),
    )
    op.create_index(
        op.f("ix_cluster_resource_caches_cluster_id"),
        "cluster_resource_caches",
        ["cluster_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_cluster_resource_caches_cluster_id"), table_name="cluster_resource_caches"
    )
    op.drop_table("cluster_resource_caches")
    with op.batch_alter_table("project_namespaces") as batch:
        batch.drop_column("last_synced_at")
        batch.drop_column("error_code")
        batch.drop_column("status")
        batch.drop_column("cluster_role")
