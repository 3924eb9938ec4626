"""Add-ons recorded on a cluster: what was asked, the operation under way and its outcome."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, EncryptedString, IntPK, TimestampMixin, utcnow


class AddonStatus(enum.StrEnum):
    """`installable` is never stored: it is what the API shows for a catalogue entry without a
    record. `degraded` is reported by the drift and health check of an installed add-on."""

    installable = "installable"
    scheduled = "scheduled"
    installing = "installing"
    installed = "installed"
    degraded = "degraded"
    errored = "errored"
    updating = "updating"
    uninstalling = "uninstalling"
    uninstalled = "uninstalled"


# An operation is under way: a second one gets 409.
BUSY = frozenset(
    {AddonStatus.scheduled, AddonStatus.installing, AddonStatus.updating, AddonStatus.uninstalling}
)


class Operation(enum.StrEnum):
    install = "install"
    upgrade = "upgrade"
    uninstall = "uninstall"


def operation_fields(operation: Operation, status: AddonStatus) -> dict[str, Any]:
    """The columns that start a new operation (with `run_seq` bumped by the caller)."""
    now = utcnow()
    return {
        "operation": operation.value,
        "status": status.value,
        "error_code": None,
        "operation_started_at": now,
        "next_run_at": now,
        "job_name": None,
        "job_created_at": None,
        "pod_started_at": None,
        "finished_at": None,
        "transient_failures": 0,
        "log_tail": None,
    }


class ClusterAddon(TimestampMixin, Base):
    __tablename__ = "cluster_addons"
    __table_args__ = (UniqueConstraint("cluster_id", "name"),)

    id: Mapped[IntPK]
    cluster_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("clusters.id", ondelete="CASCADE"), index=True
    )
    project_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(63))
    status: Mapped[str] = mapped_column(String(32))
    # Our own code for the last failure or for `degraded`, never text from the cluster.
    error_code: Mapped[str | None] = mapped_column(String(64))
    # What was asked: the chart pinned at request time and the values (encrypted: they may
    # hold passwords).
    chart: Mapped[str] = mapped_column(String(512))
    chart_version: Mapped[str] = mapped_column(String(64))
    release_namespace: Mapped[str] = mapped_column(String(63))
    values_json: Mapped[str] = mapped_column(EncryptedString, deferred=True)
    # The chart version that last installed successfully.
    installed_version: Mapped[str | None] = mapped_column(String(64))
    # The operation under way (or the last one) and its step machine.
    operation: Mapped[str] = mapped_column(String(16))
    # Bumped on every new operation and every scheduled run: a message carrying an older
    # number is a duplicate or stale and is dropped.
    run_seq: Mapped[int] = mapped_column(Integer, default=0)
    job_name: Mapped[str | None] = mapped_column(String(63))
    operation_started_at: Mapped[datetime]
    job_created_at: Mapped[datetime | None]
    pod_started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    next_run_at: Mapped[datetime | None]
    transient_failures: Mapped[int] = mapped_column(Integer, default=0)
    # The install pod's log, secrets scrubbed, bounded (each line starts with its timestamp).
    log_tail: Mapped[str | None] = mapped_column(Text, deferred=True)
    health_checked_at: Mapped[datetime | None]
    next_health_check_at: Mapped[datetime | None]

    @property
    def holds_a_release(self) -> bool:
        """Something of it may be in the cluster: installed, or an upgrade or uninstall failed."""
        return self.status in (AddonStatus.installed, AddonStatus.degraded) or (
            self.status == AddonStatus.errored and self.installed_version is not None
        )
