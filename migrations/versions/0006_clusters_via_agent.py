"""Clusters reached through an agent; instance-level clusters and agents

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 06:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
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
        batch.alter_column("project_id", existing_type=sa.BigInteger(), nullable=True)
    with op.batch_alter_table("agents") as batch:
        batch.alter_column("project_id", existing_type=sa.BigInteger(), nullable=True)


def downgrade() -> None:
    # Clusters behind agents and instance-level records have no place in the older schema.
    op.execute("DELETE FROM clusters WHERE project_id IS NULL OR agent_id IS NOT NULL")
    op.execute("DELETE FROM agents WHERE project_id IS NULL")
    with op.batch_alter_table("agents") as batch:
        batch.alter_column("project_id", existing_type=sa.BigInteger(), nullable=False)
    with op.batch_alter_table("clusters") as batch:
        batch.drop_constraint(batch.f("fk_clusters_agent_id_agents"), type_="foreignkey")
        batch.drop_index(batch.f("ix_clusters_agent_id"))
        batch.drop_column("agent_id")
        batch.alter_column("project_id", existing_type=sa.BigInteger(), nullable=False)
