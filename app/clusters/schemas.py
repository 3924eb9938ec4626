"""Request and response bodies for clusters."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from app.clusters.errors import error_message
from app.clusters.models import AuthorizationType, Cluster, ClusterStatus, ProviderType
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
    kubernetes: KubernetesPlatformCreate


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


class KubernetesPlatformRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    api_url: str
    ca_pem: str | None
    authorization_type: AuthorizationType
    namespace_prefix: str | None


class ClusterRead(BaseModel):
    id: int
    project_id: int
    name: str
    environment_scope: str
    enabled: bool
    managed: bool
    provider_type: ProviderType
    status: ClusterStatus
    error: ErrorInfo | None
    kubernetes_version: str | None
    last_checked_at: datetime | None
    created_at: datetime
    updated_at: datetime
    kubernetes: KubernetesPlatformRead | None

    @classmethod
    def of(cls, cluster: Cluster) -> ClusterRead:
        platform = cluster.platform
        return cls._build(cluster, platform, platform is not None)

    @classmethod
    def of_row(cls, row: Any) -> ClusterRead:
        """From a row of `repository.LIST_COLUMNS` (cluster columns plus platform fields)."""
        return cls._build(row, row, row.api_url is not None)

    @classmethod
    def _build(cls, cluster: Any, platform: Any, has_platform: bool) -> ClusterRead:
        # Our own rows, already typed: skip validation, the hot path of every cluster list.
        return cls.model_construct(
            id=cluster.id,
            project_id=cluster.project_id,
            name=cluster.name,
            environment_scope=cluster.environment_scope,
            enabled=cluster.enabled,
            managed=cluster.managed,
            provider_type=ProviderType(cluster.provider_type),
            status=ClusterStatus(cluster.status),
            error=ErrorInfo.model_construct(
                code=cluster.error_code, message=error_message(cluster.error_code)
            )
            if cluster.error_code
            else None,
            kubernetes_version=cluster.kubernetes_version,
            last_checked_at=cluster.last_checked_at,
            created_at=cluster.created_at,
            updated_at=cluster.updated_at,
            kubernetes=KubernetesPlatformRead.model_construct(
                api_url=platform.api_url,
                ca_pem=platform.ca_pem,
                authorization_type=AuthorizationType(platform.authorization_type),
                namespace_prefix=platform.namespace_prefix,
            )
            if has_platform
            else None,
        )
