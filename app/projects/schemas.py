"""Request and response bodies for projects."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.core.validation import DNSLabel


class ProjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: DNSLabel = Field(description="Unique project name (a DNS label).")
    description: str = Field(default="", max_length=1024)


class ProjectRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str
    created_at: datetime
