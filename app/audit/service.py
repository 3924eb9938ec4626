"""Recording audit events in the same transaction as the change they describe."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.audit.models import AuditEvent
from app.auth.principal import Principal
from app.core.logging import correlation_id


def record_audit(
    session: Session | AsyncSession,
    actor: Principal | str,
    action: str,
    target_type: str,
    target_id: int | str | None,
    *,
    project_id: int | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Add an audit event; `details` must never hold secrets."""
    session.add(
        AuditEvent(
            project_id=project_id,
            actor=actor.audit_name if isinstance(actor, Principal) else actor,
            action=action,
            target_type=target_type,
            target_id=str(target_id) if target_id is not None else None,
            correlation_id=correlation_id.get(),
            details=details or {},
        )
    )
