"""API access tokens, stored only as SHA-256 hashes."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, IntPK, utcnow


class Role(enum.StrEnum):
    reporter = "reporter"
    developer = "developer"
    maintainer = "maintainer"
    admin = "admin"

    @property
    def rank(self) -> int:
        return _RANKS[self]


_RANKS = {Role.reporter: 10, Role.developer: 20, Role.maintainer: 30, Role.admin: 100}


class AccessToken(Base):
    __tablename__ = "access_tokens"

    id: Mapped[IntPK]
    # NULL for instance-wide admin tokens.
    project_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(32))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The first characters, enough for a person to tell tokens apart in a list.
    token_prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    # Indexed: every agent-server replica polls for recent revocations (proxy requests end).
    revoked_at: Mapped[datetime | None] = mapped_column(index=True)
