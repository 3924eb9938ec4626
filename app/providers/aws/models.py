"""EKS provider records: what to provision, where provisioning is, and its temporary credentials."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, BigInteger, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, EncryptedString, IntPK, TimestampMixin


class Step(enum.StrEnum):
    """Provisioning steps in order; `done` and `failed` are terminal."""

    assume_role = "assume_role"
    create_stack = "create_stack"
    poll_stack = "poll_stack"
    configure = "configure"
    done = "done"
    failed = "failed"


TERMINAL_STEPS = frozenset({Step.done, Step.failed})


class EksProvider(TimestampMixin, Base):
    """One EKS cluster's provisioning request and progress (one per clusterport cluster)."""

    __tablename__ = "eks_providers"

    id: Mapped[IntPK]
    cluster_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("clusters.id", ondelete="CASCADE"), unique=True
    )

    # What to create, as the user asked for it.
    role_arn: Mapped[str] = mapped_column(String(2048))
    external_id: Mapped[str] = mapped_column(String(1224))
    region: Mapped[str] = mapped_column(String(32))
    kubernetes_version: Mapped[str] = mapped_column(String(8))
    node_count: Mapped[int] = mapped_column(Integer)
    instance_type: Mapped[str] = mapped_column(String(64))
    key_name: Mapped[str] = mapped_column(String(255))
    vpc_id: Mapped[str] = mapped_column(String(32))
    subnet_ids: Mapped[list[str]] = mapped_column(JSON)
    security_group_id: Mapped[str] = mapped_column(String(32))
    service_role_arn: Mapped[str] = mapped_column(String(2048))
    eks_cluster_name: Mapped[str] = mapped_column(String(100))

    # Where provisioning is. A step message carries `run_seq`; only the message whose number
    # matches runs, so duplicates (redeliveries, the reconciler) are dropped.
    step: Mapped[str] = mapped_column(String(32), default=Step.assume_role)
    run_seq: Mapped[int] = mapped_column(Integer, default=0)
    next_run_at: Mapped[datetime | None] = mapped_column(index=True)
    transient_failures: Mapped[int] = mapped_column(Integer, default=0)
    polls: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime]
    step_started_at: Mapped[datetime]
    stack_created_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    stack_name: Mapped[str | None] = mapped_column(String(128))
    stack_id: Mapped[str | None] = mapped_column(String(2048))
    stack_status: Mapped[str | None] = mapped_column(String(64))
    # AWS error code, a stack status, a Kubernetes error code or one of ours; never AWS text.
    error_code: Mapped[str | None] = mapped_column(String(64))

    # Temporary credentials of the assumed role, encrypted; cleared when provisioning ends.
    access_key_id: Mapped[str | None] = mapped_column(EncryptedString)
    secret_access_key: Mapped[str | None] = mapped_column(EncryptedString)
    session_token: Mapped[str | None] = mapped_column(EncryptedString)
    credentials_expire_at: Mapped[datetime | None]


class AwsExternalId(Base):
    """The external ID a project's provisioning roles must require (generated once per project)."""

    __tablename__ = "aws_external_ids"

    project_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    external_id: Mapped[str] = mapped_column(String(1224))
    created_at: Mapped[datetime]
