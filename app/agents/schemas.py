"""Request and response bodies for agents, agent tokens and agent connections."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.agents.models import Agent, AgentConnection, AgentToken
from app.core.validation import DisplayName, DNSLabel, UTCDatetime


class AgentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: DNSLabel


class AgentRead(BaseModel):
    id: int
    project_id: int | None = Field(description="None for an instance-level agent.")
    name: str
    created_at: datetime

    @classmethod
    def of(cls, agent: Agent) -> AgentRead:
        return cls(
            id=agent.id, project_id=agent.project_id, name=agent.name, created_at=agent.created_at
        )


class AgentTokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: DisplayName
    expires_at: UTCDatetime | None = Field(
        default=None, description="When the token stops working; it never expires when omitted."
    )


class AgentTokenRead(BaseModel):
    id: int
    agent_id: int | None
    name: str
    token_prefix: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, token: AgentToken) -> AgentTokenRead:
        return cls(
            id=token.id,
            agent_id=token.agent_id,
            name=token.name,
            token_prefix=token.token_prefix,
            created_at=token.created_at,
            expires_at=token.expires_at,
            last_used_at=token.last_used_at,
            revoked_at=token.revoked_at,
        )


class AgentTokenCreated(AgentTokenRead):
    token: str = Field(description="The agent token (`cpa_...`). Shown only in this response.")


class AgentConnectionRead(BaseModel):
    id: str
    agent_id: int
    token_id: int
    replica: str
    agent_version: str
    kubernetes_version: str
    connected_at: datetime
    last_heartbeat_at: datetime

    @classmethod
    def of(cls, row: AgentConnection) -> AgentConnectionRead:
        return cls(
            id=row.id,
            agent_id=row.agent_id,
            token_id=row.token_id,
            replica=row.replica,
            agent_version=row.agent_version,
            kubernetes_version=row.kubernetes_version,
            connected_at=row.connected_at,
            last_heartbeat_at=row.last_heartbeat_at,
        )
