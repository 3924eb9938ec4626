"""Request and response bodies for access tokens."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.auth.models import Role
from app.core.validation import DisplayName, UTCDatetime


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: DisplayName
    role: Role = Role.reporter
    expires_at: UTCDatetime | None = Field(default=None, description="Optional expiry (UTC).")


class TokenRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    project_id: int | None
    name: str
    role: Role
    token_prefix: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(TokenRead):
    token: str = Field(description="The token itself. It is shown only in this response.")
