"""foundation

Revision ID: 0001
Revises:
Create Date: 2026-11-23 12:51:27.659693
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.db

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("project_id", sa.BigInteger(), nullable=True),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target_type", sa.String(length=64), nullable=False),
        sa.Column("target_id", sa.String(length=64), nullable=True),
        sa.Column("correlation_id", sa.String(length=64), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("created_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    op.create_index(
        op.f("ix_audit_events_created_at"), "audit_events", ["created_at"], unique=False
    )
    op.create_index(
        op.f("ix_audit_events_project_id"), "audit_events", ["project_id"], unique=False
    )
    op.create_table(
        "projects",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("description", sa.String(length=1024), nullable=False),
        sa.Column("created_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_projects")),
        sa.UniqueConstraint("name", name=op.f("uq_projects_name")),
    )
    op.create_table(
        "access_tokens",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("project_id", sa.BigInteger(), nullable=True),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("token_prefix", sa.String(length=16), nullable=False),
        sa.Column("created_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_access_tokens_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_access_tokens_token_hash")),
    )
    op.create_index(
        op.f("ix_access_tokens_project_id"), "access_tokens", ["project_id"], unique=False
    )
    op.create_table(
        "clusters",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("project_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("environment_scope", sa.String(length=255), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("managed", sa.Boolean(), nullable=False),
        sa.Column("provider_type", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("kubernetes_version", sa.String(length=64), nullable=True),
        sa.Column("last_checked_at", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_clusters_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clusters")),
        sa.UniqueConstraint(
            "project_id", "environment_scope", name=op.f("uq_clusters_project_id_environment_scope")
        ),
        sa.UniqueConstraint("project_id", "name", name=op.f("uq_clusters_project_id_name")),
    )
    op.create_index(op.f("ix_clusters_project_id"), "clusters", ["project_id"], unique=False)
    op.create_table(
        "kubernetes_platforms",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("cluster_id", sa.BigInteger(), nullable=False),
        sa.Column("api_url", sa.String(length=2048), nullable=False),
        sa.Column("ca_pem", sa.Text(), nullable=True),
        sa.Column("token", app.core.db.EncryptedString(), nullable=True),
        sa.Column("authorization_type", sa.String(length=32), nullable=False),
        sa.Column("namespace_prefix", sa.String(length=40), nullable=True),
        sa.Column("created_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["cluster_id"],
            ["clusters.id"],
            name=op.f("fk_kubernetes_platforms_cluster_id_clusters"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kubernetes_platforms")),
        sa.UniqueConstraint("cluster_id", name=op.f("uq_kubernetes_platforms_cluster_id")),
    )
    op.create_table(
        "project_namespaces",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("cluster_id", sa.BigInteger(), nullable=False),
        sa.Column("project_id", sa.BigInteger(), nullable=False),
        sa.Column("environment", sa.String(length=255), nullable=False),
        sa.Column("namespace", sa.String(length=63), nullable=False),
        sa.Column("service_account_name", sa.String(length=253), nullable=False),
        sa.Column("service_account_token", app.core.db.EncryptedString(), nullable=True),
        sa.Column("created_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["cluster_id"],
            ["clusters.id"],
            name=op.f("fk_project_namespaces_cluster_id_clusters"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_project_namespaces_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_project_namespaces")),
        sa.UniqueConstraint(
            "cluster_id", "namespace", name=op.f("uq_project_namespaces_cluster_id_namespace")
        ),
        sa.UniqueConstraint(
            "cluster_id",
            "project_id",
            "environment",
            name=op.f("uq_project_namespaces_cluster_id_project_id_environment"),
        ),
    )
    op.create_index(
        op.f("ix_project_namespaces_cluster_id"), "project_namespaces", ["cluster_id"], unique=False
    )
    op.create_index(
        op.f("ix_project_namespaces_project_id"), "project_namespaces", ["project_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_project_namespaces_project_id"), table_name="project_namespaces")
    op.drop_index(op.f("ix_project_namespaces_cluster_id"), table_name="project_namespaces")
    op.drop_table("project_namespaces")
    op.drop_table("kubernetes_platforms")
    op.drop_index(op.f("ix_clusters_project_id"), table_name="clusters")
    op.drop_table("clusters")
    op.drop_index(op.f("ix_access_tokens_project_id"), table_name="access_tokens")
    op.drop_table("access_tokens")
    op.drop_table("projects")
    op.drop_index(op.f("ix_audit_events_project_id"), table_name="audit_events")
    op.drop_index(op.f("ix_audit_events_created_at"), table_name="audit_events")
    op.drop_table("audit_events")
