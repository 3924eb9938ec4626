"""Manifest sources, environments (source -> cluster + namespace), deliveries and deployments."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, EncryptedString, IntPK, TimestampMixin, utcnow


class RenderMode(enum.StrEnum):
    plain = "plain"
    kustomize = "kustomize"
    helm = "helm"


class DeploymentStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    awaiting_confirmation = "awaiting_confirmation"
    succeeded = "succeeded"
    failed = "failed"
    timed_out = "timed_out"


FINISHED = frozenset(
    {DeploymentStatus.succeeded, DeploymentStatus.failed, DeploymentStatus.timed_out}
)


class DeploymentStep(enum.StrEnum):
    """Where a running deployment is; a resumed job continues from here."""

    apply = "apply"
    health = "health"


class Trigger(enum.StrEnum):
    delivery = "delivery"
    poll = "poll"
    manual = "manual"
    rollback = "rollback"
    self_heal = "self_heal"


class SyncStatus(enum.StrEnum):
    unknown = "unknown"
    in_sync = "in_sync"
    drifted = "drifted"


class GitSource(TimestampMixin, Base):
    __tablename__ = "git_sources"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[IntPK]
    project_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(63))
    url: Mapped[str] = mapped_column(String(2048))
    # A token sent as HTTP basic auth password; never returned.
    token: Mapped[str | None] = mapped_column(EncryptedString, deferred=True)
    # For ssh:// URLs: the deploy key (OpenSSH private key; never returned) and the server's
    # host keys in known_hosts format, checked strictly.
    deploy_key: Mapped[str | None] = mapped_column(EncryptedString, deferred=True)
    known_hosts: Mapped[str | None] = mapped_column(Text)
    # Full ref name (`refs/heads/main`, `refs/tags/v1.0`) or a tag pattern (`refs/tags/v*`).
    ref: Mapped[str] = mapped_column(String(255))
    paths: Mapped[list[str]] = mapped_column(JSON)
    render: Mapped[str] = mapped_column(String(16), default=RenderMode.plain)
    helm_values_file: Mapped[str | None] = mapped_column(String(1024))
    # The webhook URL's id (public, random) and the secret that signs or authenticates it.
    hook_id: Mapped[str] = mapped_column(String(64), unique=True)
    webhook_secret: Mapped[str] = mapped_column(EncryptedString, deferred=True)
    # Poll fallback (`git ls-remote`), so a lost webhook only delays a deployment; 0 turns it off.
    poll_interval_seconds: Mapped[int] = mapped_column(Integer, default=180)
    last_polled_at: Mapped[datetime | None]
    last_polled_commit: Mapped[str | None] = mapped_column(String(64))


class GitOpsEnvironment(TimestampMixin, Base):
    __tablename__ = "gitops_environments"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[IntPK]
    project_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    source_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("git_sources.id", ondelete="CASCADE"), index=True
    )
    cluster_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("clusters.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(63))
    namespace: Mapped[str] = mapped_column(String(63))
    # Set when the environment is declared in that agent's configuration file (and kept in
    # step with it on every push); None for environments created through the API.
    configured_by_agent_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("agents.id", ondelete="SET NULL"), index=True
    )
    auto_sync: Mapped[bool] = mapped_column(default=True)
    prune: Mapped[bool] = mapped_column(default=True)
    self_heal: Mapped[bool] = mapped_column(default=False)
    health_timeout_seconds: Mapped[int] = mapped_column(Integer, default=300)
    allow_cluster_scoped: Mapped[bool] = mapped_column(default=False)
    extra_namespaces: Mapped[list[str]] = mapped_column(JSON, default=list)
    max_prune_share: Mapped[float] = mapped_column(Float, default=0.5)
    # A pinned rollback locks the environment: no automatic deployment until it is unlocked.
    locked: Mapped[bool] = mapped_column(default=False)
    # What the environment owns in the cluster (ObjectRef dicts); the cluster holds a copy.
    inventory: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    sync_status: Mapped[str] = mapped_column(String(16), default=SyncStatus.unknown)
    drifted_objects: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    drift_checked_at: Mapped[datetime | None]


class WebhookDelivery(Base):
    """Every accepted webhook delivery, once per delivery id."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (UniqueConstraint("source_id", "delivery_key"),)

    id: Mapped[IntPK]
    source_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("git_sources.id", ondelete="CASCADE"), index=True
    )
    delivery_key: Mapped[str] = mapped_column(String(128))
    provider: Mapped[str] = mapped_column(String(16))
    event: Mapped[str] = mapped_column(String(64))
    ref: Mapped[str | None] = mapped_column(String(255))
    commit_sha: Mapped[str | None] = mapped_column(String(64))
    # queued -> deployment ids it led to, or why it led to none (ignored_ref, up_to_date, ...)
    outcome: Mapped[str] = mapped_column(String(32), default="received")
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class Deployment(TimestampMixin, Base):
    __tablename__ = "deployments"
    __table_args__ = (Index(None, "environment_id", "status"), Index(None, "status", "updated_at"))

    id: Mapped[IntPK]
    project_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    environment_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("gitops_environments.id", ondelete="CASCADE")
    )
    status: Mapped[str] = mapped_column(String(32), default=DeploymentStatus.queued)
    step: Mapped[str | None] = mapped_column(String(16))
    trigger: Mapped[str] = mapped_column(String(16))
    triggered_by: Mapped[str] = mapped_column(String(255))
    delivery_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("webhook_deliveries.id", ondelete="SET NULL")
    )
    # Deliveries folded into this deployment while it was queued (coalescing).
    coalesced: Mapped[int] = mapped_column(Integer, default=0)
    ref: Mapped[str | None] = mapped_column(String(255))
    commit_sha: Mapped[str | None] = mapped_column(String(64))
    rollback_of_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("deployments.id", ondelete="SET NULL")
    )
    # The rendered objects as applied, and their digest: a rollback re-applies exactly these.
    manifests: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, deferred=True)
    digest: Mapped[str | None] = mapped_column(String(80))
    prune_confirmed: Mapped[bool] = mapped_column(default=False)
    prune_guard_reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    error_code: Mapped[str | None] = mapped_column(String(64))
    # Our own message (for render errors: file and line in the repository), never cluster text.
    error_message: Mapped[str | None] = mapped_column(Text)
    failed_object: Mapped[str | None] = mapped_column(String(512))
    started_at: Mapped[datetime | None]
    applied_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    health_deadline_at: Mapped[datetime | None]


class DeploymentObject(Base):
    """One object of a deployment: what was done to it and its health."""

    __tablename__ = "deployment_objects"

    id: Mapped[IntPK]
    deployment_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    api_version: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(255))
    namespace: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(253))
    # apply | prune | prune_pending (waits for confirmation)
    action: Mapped[str] = mapped_column(String(16))
    # pending | applied | pruned | failed | skipped
    result: Mapped[str] = mapped_column(String(16), default="pending")
    health: Mapped[str | None] = mapped_column(String(16))
    code: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
