"""GitOps sources over SSH: a deploy key and the server's known host keys

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 11:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.db

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("git_sources", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deploy_key", app.core.db.EncryptedString(), nullable=True))
        batch_op.add_column(sa.Column("known_hosts", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("git_sources", schema=None) as batch_op:
        batch_op.drop_column("known_hosts")
        batch_op.drop_column("deploy_key")
