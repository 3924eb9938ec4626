"""The audit trail: who did what to which record, and when."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, IntPK, utcnow


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[IntPK]
    # Not a foreign key: the trail outlives the project it speaks of.
    project_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str] = mapped_column(String(64))
    target_id: Mapped[str | None] = mapped_column(String(64))
    correlation_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
