"""agent deletion keeps revoked tokens; source addresses per agent token

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.db

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("agent_tokens") as batch:
        batch.alter_column("agent_id", existing_type=sa.BigInteger(), nullable=True)
        batch.drop_constraint("fk_agent_tokens_agent_id_agents", type_="foreignkey")
        batch.create_foreign_key(
            "fk_agent_tokens_agent_id_agents", "agents", ["agent_id"], ["id"], ondelete="SET NULL"
        )
    op.create_table(
        "agent_token_sources",
        sa.Column("token_id", sa.BigInteger(), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("first_seen_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["token_id"],
            ["agent_tokens.id"],
            name=op.f("fk_agent_token_sources_token_id_agent_tokens"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token_id", "address", name=op.f("pk_agent_token_sources")),
    )


def downgrade() -> None:
    op.drop_table("agent_token_sources")
    op.execute("DELETE FROM agent_tokens WHERE agent_id IS NULL")
    with op.batch_alter_table("agent_tokens") as batch:
        batch.drop_constraint("fk_agent_tokens_agent_id_agents", type_="foreignkey")
        batch.create_foreign_key(
            "fk_agent_tokens_agent_id_agents", "agents", ["agent_id"], ["id"], ondelete="CASCADE"
        )
        batch.alter_column("agent_id", existing_type=sa.BigInteger(), nullable=False)
