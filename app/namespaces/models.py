"""Project namespaces that clusterport creates on managed clusters."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, EncryptedString, IntPK, TimestampMixin
from app.core.reconcile import RetryState


class NamespaceStatus(enum.StrEnum):
    # Pending: a worker is on it (retrying shows `last_error` and `retry_at`).
    provisioning = "provisioning"
    ready = "ready"
    # Final: the last attempt failed with `error_code`; POST again to retry.
    failed = "failed"
    deleting = "deleting"


class ProjectNamespace(RetryState, TimestampMixin, Base):
    __tablename__ = "project_namespaces"
    __table_args__ = (
        UniqueConstraint("cluster_id", "namespace"),
        UniqueConstraint("cluster_id", "project_id", "environment"),
    )

    id: Mapped[IntPK]
    cluster_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("clusters.id", ondelete="CASCADE"), index=True
    )
    project_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    environment: Mapped[str] = mapped_column(String(255))
    namespace: Mapped[str] = mapped_column(String(63))
    service_account_name: Mapped[str] = mapped_column(String(253))
    service_account_token: Mapped[str | None] = mapped_column(EncryptedString, deferred=True)
    # The ClusterRole the service account is bound to inside its namespace.
    cluster_role: Mapped[str] = mapped_column(String(253), default="admin", server_default="admin")
    status: Mapped[str] = mapped_column(
        String(32), default=NamespaceStatus.provisioning, server_default="provisioning"
    )
    # Our own code for the last failure (see app/clusters/errors.py), never cluster text.
    error_code: Mapped[str | None] = mapped_column(String(64))
    last_synced_at: Mapped[datetime | None]
