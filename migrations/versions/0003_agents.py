"""agents

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 12:57:49.625804
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.db

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "agent_server_replicas",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("proxy_url", sa.String(length=500), nullable=False),
        sa.Column("started_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_agent_server_replicas")),
    )
    op.create_index(
        op.f("ix_agent_server_replicas_heartbeat_at"),
        "agent_server_replicas",
        ["heartbeat_at"],
        unique=False,
    )
    op.create_table(
        "agents",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("project_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("created_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_agents_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agents")),
        sa.UniqueConstraint("project_id", "name", name=op.f("uq_agents_project_id_name")),
    )
    op.create_index(op.f("ix_agents_project_id"), "agents", ["project_id"], unique=False)
    op.create_table(
        "agent_tokens",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("agent_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("token_prefix", sa.String(length=16), nullable=False),
        sa.Column("created_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name=op.f("fk_agent_tokens_agent_id_agents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_agent_tokens_token_hash")),
    )
    op.create_index(op.f("ix_agent_tokens_agent_id"), "agent_tokens", ["agent_id"], unique=False)
    op.create_index(
        op.f("ix_agent_tokens_revoked_at"), "agent_tokens", ["revoked_at"], unique=False
    )
    op.create_table(
        "agent_connections",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("agent_id", sa.BigInteger(), nullable=False),
        sa.Column("token_id", sa.BigInteger(), nullable=False),
        sa.Column("replica", sa.String(length=200), nullable=False),
        sa.Column("agent_version", sa.String(length=64), nullable=False),
        sa.Column("kubernetes_version", sa.String(length=64), nullable=False),
        sa.Column("source_address", sa.String(length=64), nullable=False),
        sa.Column("connected_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_heartbeat_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name=op.f("fk_agent_connections_agent_id_agents"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["replica"],
            ["agent_server_replicas.name"],
            name=op.f("fk_agent_connections_replica_agent_server_replicas"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["token_id"],
            ["agent_tokens.id"],
            name=op.f("fk_agent_connections_token_id_agent_tokens"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_connections")),
    )
    op.create_index(
        op.f("ix_agent_connections_agent_id"),
        "agent_connections",
        ["agent_id", "replica"],
        unique=False,
    )
    op.create_index(
        op.f("ix_agent_connections_replica"), "agent_connections", ["replica"], unique=False
    )
    op.create_index(
        op.f("ix_agent_connections_token_id"), "agent_connections", ["token_id"], unique=False
    )


def downgrade() -> None:

    op.drop_index(op.f("ix_agent_connections_token_id"), table_name="agent_connections")
    op.drop_index(op.f("ix_agent_connections_replica"), table_name="agent_connections")
    op.drop_index(op.f("ix_agent_connections_agent_id"), table_name="agent_connections")
    op.drop_table("agent_connections")
    op.drop_index(op.f("ix_agent_tokens_revoked_at"), table_name="agent_tokens")
    op.drop_index(op.f("ix_agent_tokens_agent_id"), table_name="agent_tokens")
    op.drop_table("agent_tokens")
    op.drop_index(op.f("ix_agents_project_id"), table_name="agents")
    op.drop_table("agents")
    op.drop_index(op.f("ix_agent_server_replicas_heartbeat_at"), table_name="agent_server_replicas")
    op.drop_table("agent_server_replicas")
