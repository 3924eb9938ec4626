"""Request and response bodies for agents, agent tokens and agent connections."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.agents.models import AccessAs, Agent, AgentAccess, AgentConnection, AgentToken
from app.core.pagination import MAX_ID
from app.core.validation import DisplayName, DNSLabel, EnvironmentScope, UTCDatetime

ProxyRole = Literal["reporter", "developer", "maintainer"]
MAX_ACCESS_ENTRIES = 100

CONFIG_SOURCE_DESCRIPTION = (
    "A GitOps source of the project whose file `.clusterport/agents/<agent name>/config.yaml` "
    "declares the agent's environments; it is read now and again on every push to the source. "
    "Only for agents of a project."
)


class AgentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: DNSLabel
    config_source_id: int | None = Field(default=None, description=CONFIG_SOURCE_DESCRIPTION)


class AgentUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config_source_id: int | None = Field(
        default=None,
        description=CONFIG_SOURCE_DESCRIPTION + " Null stops reading it: the environments it "
        "declared stay, as ordinary environments.",
    )


class AgentConfigError(BaseModel):
    code: str
    message: str = Field(description="`path:line: field: problem`, about the file at `commit`.")
    line: int | None
    commit: str | None


class AgentConfigRead(BaseModel):
    status: str = Field(
        description="`pending` (not read yet), `applied`, `invalid` (the last pushed file is "
        "wrong) or `unreadable` (the source could not be read). When `invalid` or "
        "`unreadable`, the configuration of `commit` stays in effect."
    )
    commit: str | None = Field(description="The commit of the configuration in effect.")
    checked_at: datetime | None
    error: AgentConfigError | None


class AgentRead(BaseModel):
    id: int
    project_id: int | None = Field(description="None for an instance-level agent.")
    name: str
    created_at: datetime
    config_source_id: int | None
    config: AgentConfigRead | None = Field(
        description="The state of the configuration file (null without a configuration source)."
    )

    @classmethod
    def of(cls, agent: Agent) -> AgentRead:
        config = None
        if agent.config_source_id is not None and agent.config_status is not None:
            error = None
            if agent.config_error_code is not None:
                error = AgentConfigError(
                    code=agent.config_error_code,
                    message=agent.config_error or "",
                    line=agent.config_error_line,
                    commit=agent.config_error_commit,
                )
            config = AgentConfigRead(
                status=agent.config_status,
                commit=agent.config_commit,
                checked_at=agent.config_checked_at,
                error=error,
            )
        return cls(
            id=agent.id,
            project_id=agent.project_id,
            name=agent.name,
            created_at=agent.created_at,
            config_source_id=agent.config_source_id,
            config=config,
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


class AgentAccessEntry(BaseModel):
    """One project's access to the agent's Kubernetes API proxy."""

    model_config = ConfigDict(extra="forbid")

    project_id: int | None = Field(
        ge=1,
        le=MAX_ID,
        description="The project whose tokens this entry admits; null: instance admin tokens.",
    )
    min_role: ProxyRole = Field(
        default="developer", description="The weakest token role of the project admitted."
    )
    access_as: AccessAs = Field(
        description="`agent`: requests act with the agent's own service account. "
        "`impersonate`: requests act as `clusterport:token:<token id>` with the groups "
        "`clusterport:project:<project id>` and `clusterport:project:<project id>:<role>` for "
        "the token's role and each weaker one (admin tokens: the group `clusterport:admin`); "
        "the cluster's RBAC decides."
    )
    environments: list[EnvironmentScope] | None = Field(
        default=None,
        max_length=50,
        description="Environments (names or patterns such as `review/*`) the project's CI jobs "
        "may reach this agent for; omitted: every environment.",
    )

    @classmethod
    def of(cls, row: AgentAccess) -> AgentAccessEntry:
        return cls(
            project_id=row.project_id,
            min_role=row.min_role,
            access_as=AccessAs(row.access_as),
            environments=row.environments,
        )


class AgentAccessUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entries: list[AgentAccessEntry] = Field(
        max_length=MAX_ACCESS_ENTRIES,
        description="The whole access list; it replaces the previous one. Empty: no proxy "
        "access for anyone.",
    )


class AgentAccessRead(BaseModel):
    agent_id: int
    entries: list[AgentAccessEntry]
