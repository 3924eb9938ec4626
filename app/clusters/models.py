"""Clusters and their Kubernetes platform (API URL, CA, credentials)."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.core.db import Base, EncryptedString, IntPK, TimestampMixin
from app.core.reconcile import RetryState


class ClusterStatus(enum.StrEnum):
    connecting = "connecting"
    connected = "connected"
    unreachable = "unreachable"
    unauthorized = "unauthorized"
    forbidden = "forbidden"
    provisioning = "provisioning"
    errored = "errored"
    deleting = "deleting"
    disabled = "disabled"


class ConnectionKind(enum.StrEnum):
    """How workers reach the cluster's API: its URL, or through an agent's tunnel."""

    direct = "direct"
    via_agent = "via_agent"


class ProviderType(enum.StrEnum):
    user = "user"
    aws = "aws"


class AuthorizationType(enum.StrEnum):
    rbac = "rbac"
    abac = "abac"
    unknown = "unknown_authorization"


class Cluster(RetryState, TimestampMixin, Base):
    __tablename__ = "clusters"
    __table_args__ = (
        UniqueConstraint("project_id", "name"),
        UniqueConstraint("project_id", "environment_scope"),
    )

    id: Mapped[IntPK]
    # NULL: an instance-level cluster, registered by an admin and usable by every project.
    project_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(63))
    environment_scope: Mapped[str] = mapped_column(String(255), default="*")
    enabled: Mapped[bool] = mapped_column(default=True)
    # Managed clusters get a namespace and service account per project environment.
    managed: Mapped[bool] = mapped_column(default=True)
    provider_type: Mapped[str] = mapped_column(String(16), default=ProviderType.user)
    status: Mapped[str] = mapped_column(String(32), default=ClusterStatus.connecting)
    # Our own code for the last failure; the message shown comes from a fixed table of ours.
    error_code: Mapped[str | None] = mapped_column(String(64))
    kubernetes_version: Mapped[str | None] = mapped_column(String(64))
    last_checked_at: Mapped[datetime | None]
    # Set for clusters reached through an agent (they have no platform: no URL, no token).
    # An agent that clusters use cannot be deleted.
    agent_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("agents.id", ondelete="RESTRICT"), index=True
    )

    platform: Mapped[KubernetesPlatform | None] = relationship(
        back_populates="cluster", uselist=False, lazy="joined", cascade="all, delete-orphan"
    )


class KubernetesPlatform(TimestampMixin, Base):
    __tablename__ = "kubernetes_platforms"

    id: Mapped[IntPK]
    cluster_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("clusters.id", ondelete="CASCADE"), unique=True
    )
    api_url: Mapped[str] = mapped_column(String(2048))
    ca_pem: Mapped[str | None] = mapped_column(Text)
    token: Mapped[str | None] = mapped_column(EncryptedString, deferred=True)
    authorization_type: Mapped[str] = mapped_column(String(32), default=AuthorizationType.rbac)
    namespace_prefix: Mapped[str | None] = mapped_column(String(40))

    cluster: Mapped[Cluster] = relationship(back_populates="platform")
