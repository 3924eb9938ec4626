"""Request and response bodies for clusters."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, model_validator

from app.clusters.errors import error_message
from app.clusters.models import (
    AuthorizationType,
    Cluster,
    ClusterStatus,
    ConnectionKind,
    ProviderType,
)
from app.core.validation import CertificatePEM, DNSLabel, EnvironmentScope


class KubernetesPlatformCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api_url: str = Field(max_length=2048, description="https URL of the Kubernetes API.")
    ca_pem: CertificatePEM | None = Field(
        default=None, description="PEM CA bundle; omit for a publicly trusted certificate."
    )
    token: SecretStr = Field(min_length=1, max_length=16384, description="Service account token.")
    authorization_type: AuthorizationType = AuthorizationType.rbac
    namespace_prefix: DNSLabel | None = Field(default=None, max_length=40)


class KubernetesPlatformUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api_url: str | None = Field(default=None, max_length=2048)
    ca_pem: CertificatePEM | None = None
    token: SecretStr | None = Field(default=None, min_length=1, max_length=16384)
    authorization_type: AuthorizationType | None = None
    namespace_prefix: DNSLabel | None = Field(default=None, max_length=40)


class ClusterCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: DNSLabel
    environment_scope: EnvironmentScope = "*"
    enabled: bool = True
    managed: bool = Field(
        default=True, description="clusterport creates a namespace per project environment."
    )
    kubernetes: KubernetesPlatformCreate | None = Field(
        default=None, description="Reach the cluster directly: API URL, CA and token."
    )
    agent_id: int | None = Field(
        default=None,
        description="Reach the cluster through this agent of the project instead of "
        "`kubernetes` (for clusters behind a firewall). Give one of the two.",
    )

    @model_validator(mode="after")
    def _one_way_in(self) -> Self:
        if (self.kubernetes is None) == (self.agent_id is None):
            raise ValueError("give either `kubernetes` (direct) or `agent_id` (via an agent)")
        return self


class ClusterUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: DNSLabel | None = None
    environment_scope: EnvironmentScope | None = None
    enabled: bool | None = None
    managed: bool | None = None
    kubernetes: KubernetesPlatformUpdate | None = None


class ErrorInfo(BaseModel):
    code: str
    message: str


STATUS_SEMANTICS = (
    " Pending states change by themselves: while a step is retried after a transient failure "
    "the record keeps its pending state and shows `last_error` and `retry_at`. Failed states "
    "are final (the failure's code is in `error`) until you act on the record again."
)
LAST_ERROR = Field(
    description="The transient failure being retried while the record is pending (None when "
    "there is none). Not final: `error` is."
)
RETRY_AT = Field(description="When the pending step is tried next, while it is being retried.")


class AgentLink(BaseModel):
    id: int
    connected: bool = Field(description="Whether the agent holds a live connection now.")


class KubernetesPlatformRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    api_url: str
    ca_pem: str | None
    authorization_type: AuthorizationType
    namespace_prefix: str | None


class ClusterRead(BaseModel):
    id: int
    project_id: int | None = Field(
        description="None for an instance-level cluster (registered by an admin, usable and "
        "visible read-only in every project)."
    )
    name: str
    environment_scope: str
    enabled: bool
    managed: bool
    provider_type: ProviderType
    status: ClusterStatus = Field(
        description="`connecting` and `deleting` are pending; `connected` is the goal; "
        "`unreachable`, `unauthorized`, `forbidden` and `errored` are final failures with "
        "`error`; `provisioning` is an EKS cluster being created (see its provisioning)."
        + STATUS_SEMANTICS
    )
    error: ErrorInfo | None = Field(description="The final failure's code and our message.")
    last_error: ErrorInfo | None = LAST_ERROR
    retry_at: datetime | None = RETRY_AT
    kubernetes_version: str | None
    last_checked_at: datetime | None
    created_at: datetime
    updated_at: datetime
    connection: ConnectionKind = Field(
        description="`direct` (API URL and token) or `via_agent` (through `agent`'s tunnel)."
    )
    kubernetes: KubernetesPlatformRead | None
    agent: AgentLink | None

    @classmethod
    def of(cls, cluster: Cluster, connected_agents: Collection[int]) -> ClusterRead:
        """`connected_agents`: ids of the agents connected now (see agents' repository)."""
        item = {column.key: getattr(cluster, column.key) for column in Cluster.__table__.columns}
        platform = cluster.platform
        item.update({key: getattr(platform, key, None) for key in _PLATFORM_FIELDS})
        return cls.model_validate(_nest(item, connected_agents))

    @classmethod
    def of_rows(cls, rows: Iterable[Any], connected_agents: Collection[int]) -> list[ClusterRead]:
        """From rows of `repository.LIST_COLUMNS` (cluster columns plus platform fields).

        Plain dicts validated in one call: several times faster than building each model in
        Python, and lists are the hot path.
        """
        return _MANY.validate_python([_nest(row._asdict(), connected_agents) for row in rows])


_MANY = TypeAdapter(list[ClusterRead])
_PLATFORM_FIELDS = ("api_url", "ca_pem", "authorization_type", "namespace_prefix")


def _nest(item: dict[str, Any], connected_agents: Collection[int]) -> dict[str, Any]:
    """Shape a flat cluster + platform mapping like `ClusterRead` (flat keys stay behind;
    validation ignores extras). No platform means no `api_url`."""
    code = item["error_code"]
    item["error"] = {"code": code, "message": error_message(code)} if code else None
    code = item["last_error"]
    item["last_error"] = {"code": code, "message": error_message(code)} if code else None
    item["kubernetes"] = (
        {key: item[key] for key in _PLATFORM_FIELDS} if item["api_url"] is not None else None
    )
    agent_id = item["agent_id"]
    item["connection"] = ConnectionKind.direct if agent_id is None else ConnectionKind.via_agent
    item["agent"] = (
        None if agent_id is None else {"id": agent_id, "connected": agent_id in connected_agents}
    )
    return item
