"""EKS provider records and per-project AWS external IDs

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 13:01:32.530848
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.db

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "aws_external_ids",
        sa.Column("project_id", sa.BigInteger(), nullable=False),
        sa.Column("external_id", sa.String(length=1224), nullable=False),
        sa.Column("created_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_aws_external_ids_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("project_id", name=op.f("pk_aws_external_ids")),
    )
    op.create_table(
        "eks_providers",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("cluster_id", sa.BigInteger(), nullable=False),
        sa.Column("role_arn", sa.String(length=2048), nullable=False),
        sa.Column("external_id", sa.String(length=1224), nullable=False),
        sa.Column("region", sa.String(length=32), nullable=False),
        sa.Column("kubernetes_version", sa.String(length=8), nullable=False),
        sa.Column("node_count", sa.Integer(), nullable=False),
        sa.Column("instance_type", sa.String(length=64), nullable=False),
        sa.Column("key_name", sa.String(length=255), nullable=False),
        sa.Column("vpc_id", sa.String(length=32), nullable=False),
        sa.Column("subnet_ids", sa.JSON(), nullable=False),
        sa.Column("security_group_id", sa.String(length=32), nullable=False),
        sa.Column("service_role_arn", sa.String(length=2048), nullable=False),
        sa.Column("eks_cluster_name", sa.String(length=100), nullable=False),
        sa.Column("step", sa.String(length=32), nullable=False),
        sa.Column("run_seq", sa.Integer(), nullable=False),
        sa.Column("next_run_at", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("transient_failures", sa.Integer(), nullable=False),
        sa.Column("polls", sa.Integer(), nullable=False),
        sa.Column("started_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("step_started_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("stack_created_at", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("stack_name", sa.String(length=128), nullable=True),
        sa.Column("stack_id", sa.String(length=2048), nullable=True),
        sa.Column("stack_status", sa.String(length=64), nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("access_key_id", app.core.db.EncryptedString(), nullable=True),
        sa.Column("secret_access_key", app.core.db.EncryptedString(), nullable=True),
        sa.Column("session_token", app.core.db.EncryptedString(), nullable=True),
        sa.Column("credentials_expire_at", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["cluster_id"],
            ["clusters.id"],
            name=op.f("fk_eks_providers_cluster_id_clusters"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_eks_providers")),
        sa.UniqueConstraint("cluster_id", name=op.f("uq_eks_providers_cluster_id")),
    )
    with op.batch_alter_table("eks_providers", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_eks_providers_next_run_at"), ["next_run_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("eks_providers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_eks_providers_next_run_at"))

    op.drop_table("eks_providers")
    op.drop_table("aws_external_ids")
