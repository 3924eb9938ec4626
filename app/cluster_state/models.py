"""Cached lists of cluster objects, refreshed by a worker when a request finds them stale."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, IntPK
from app.core.reconcile import RetryState


class ClusterResourceCache(RetryState, Base):
    __tablename__ = "cluster_resource_caches"
    __table_args__ = (UniqueConstraint("cluster_id", "kind", "namespace"),)

    id: Mapped[IntPK]
    cluster_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("clusters.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(32))
    # "" means every namespace.
    namespace: Mapped[str] = mapped_column(String(63), default="")
    items: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    truncated: Mapped[bool] = mapped_column(default=False)
    # When the cluster was read (None until the first refresh ends).
    read_at: Mapped[datetime | None]
    # Set by the request that enqueued a refresh; others seeing it recent enqueue nothing.
    refresh_requested_at: Mapped[datetime | None]
    # Our code for the last failed refresh and when it happened.
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_at: Mapped[datetime | None]
