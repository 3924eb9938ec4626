"""Response bodies for the audit trail."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class AuditEventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    project_id: int | None
    actor: str
    action: str
    target_type: str
    target_id: str | None
    correlation_id: str | None
    details: dict[str, Any]
    created_at: datetime
