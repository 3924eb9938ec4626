"""cluster add-ons: what was asked, the operation under way, its log tail and health

Revision ID: 0008
Revises: 0004
Create Date: 2026-12-02 06:20:05.729422
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.db

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cluster_addons",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("cluster_id", sa.BigInteger(), nullable=False),
        sa.Column("project_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("chart", sa.String(length=512), nullable=False),
        sa.Column("chart_version", sa.String(length=64), nullable=False),
        sa.Column("release_namespace", sa.String(length=63), nullable=False),
        sa.Column("values_json", app.core.db.EncryptedString(), nullable=False),
        sa.Column("installed_version", sa.String(length=64), nullable=True),
        sa.Column("operation", sa.String(length=16), nullable=False),
        sa.Column("run_seq", sa.Integer(), nullable=False),
        sa.Column("job_name", sa.String(length=63), nullable=True),
        sa.Column("operation_started_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("job_created_at", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("pod_started_at", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("next_run_at", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("transient_failures", sa.Integer(), nullable=False),
        sa.Column("log_tail", sa.Text(), nullable=True),
        sa.Column("health_checked_at", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("next_health_check_at", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["cluster_id"],
            ["clusters.id"],
            name=op.f("fk_cluster_addons_cluster_id_clusters"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_cluster_addons_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cluster_addons")),
        sa.UniqueConstraint("cluster_id", "name", name=op.f("uq_cluster_addons_cluster_id_name")),
    )
    op.create_index(op.f("ix_cluster_addons_cluster_id"), "cluster_addons", ["cluster_id"])
    op.create_index(op.f("ix_cluster_addons_project_id"), "cluster_addons", ["project_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_cluster_addons_project_id"), table_name="cluster_addons")
    op.drop_index(op.f("ix_cluster_addons_cluster_id"), table_name="cluster_addons")
    op.drop_table("cluster_addons")
