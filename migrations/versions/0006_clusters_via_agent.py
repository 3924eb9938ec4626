"""Clusters reached through an agent

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-02 06:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Batch mode: SQLite adds a foreign key only by rebuilding the table.
    with op.batch_alter_table("clusters") as batch:
        batch.add_column(sa.Column("agent_id", sa.BigInteger(), nullable=True))
        batch.create_index(batch.f("ix_clusters_agent_id"), ["agent_id"], unique=False)
        batch.create_foreign_key(
            batch.f("fk_clusters_agent_id_agents"),
            "agents",
            ["agent_id"],
            ["id"],
            ondelete="RESTRICT",
        )


def downgrade() -> None:
    with op.batch_alter_table("clusters") as batch:
        batch.drop_constraint(batch.f("fk_clusters_agent_id_agents"), type_="foreignkey")
        batch.drop_index(batch.f("ix_clusters_agent_id"))
        batch.drop_column("agent_id")
