"""Short-lived credentials for CI jobs: Kubernetes API access through the project's agents."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, IntPK, utcnow


class JobToken(Base):
    """The record behind a signed job credential (the credential itself is never stored):
    revoking the row stops the credential within the proxy's 2-second authorization cache."""

    __tablename__ = "job_tokens"

    id: Mapped[IntPK]
    project_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    environment: Mapped[str] = mapped_column(String(255))
    # The role of the token that created it; agents' `min_role` applies to it.
    role: Mapped[str] = mapped_column(String(32))
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
