"""Agents, their tokens (hashes only), agent-server replicas and live connections."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, IntPK, utcnow

AGENT_TOKEN_PREFIX = "cpa_"  # noqa: S105 - a prefix, not a secret


class Agent(Base):
    __tablename__ = "agents"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[IntPK]
    # NULL: an instance-level agent, registered by an admin; any project's clusters may use it.
    project_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(63))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # A GitOps source of the project holding `.clusterport/agents/<name>/config.yaml`, which
    # declares the agent's environments; re-read on every push to it.
    config_source_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("git_sources.id", ondelete="SET NULL"), index=True
    )
    # pending | applied | invalid | unreadable (see app.gitops.agent_config)
    config_status: Mapped[str | None] = mapped_column(String(16))
    # The commit of the configuration in effect (the last good one).
    config_commit: Mapped[str | None] = mapped_column(String(64))
    # The last read's problem, if any: our code, our message (`path:line: ...`), its commit.
    config_error_code: Mapped[str | None] = mapped_column(String(64))
    config_error: Mapped[str | None] = mapped_column(Text)
    config_error_line: Mapped[int | None]
    config_error_commit: Mapped[str | None] = mapped_column(String(64))
    config_checked_at: Mapped[datetime | None]


class AccessAs(enum.StrEnum):
    """Who a request through the proxy acts as in the cluster."""

    agent = "agent"  # the agent's own service account
    impersonate = "impersonate"  # the caller's clusterport identity, limited by cluster RBAC


class AgentAccess(Base):
    """Which project's tokens may use an agent's Kubernetes API proxy, and as whom.

    No row for a project: its tokens get no proxy access (off by default). `project_id` NULL:
    the entry for instance admin tokens, which belong to no project.
    """

    __tablename__ = "agent_access"
    __table_args__ = (UniqueConstraint("agent_id", "project_id"),)

    id: Mapped[IntPK]
    agent_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("agents.id", ondelete="CASCADE"), index=True
    )
    project_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    min_role: Mapped[str] = mapped_column(String(32))
    access_as: Mapped[str] = mapped_column(String(16))
    # Environment names or patterns (`review/*`) CI jobs of the project may use; NULL: all.
    environments: Mapped[list[str] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AgentToken(Base):
    __tablename__ = "agent_tokens"

    id: Mapped[IntPK]
    # NULL once the agent is deleted: the revoked row stays behind for a while so that every
    # agent-server replica sees the revocation and closes the token's connections.
    agent_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("agents.id", ondelete="SET NULL"), index=True
    )
    name: Mapped[str] = mapped_column(String(255))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    # Indexed: every agent-server replica polls for recent revocations.
    revoked_at: Mapped[datetime | None] = mapped_column(index=True)


class AgentTokenSource(Base):
    """A source address a token has connected from; a new one is written to the audit trail."""

    __tablename__ = "agent_token_sources"

    token_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("agent_tokens.id", ondelete="CASCADE"), primary_key=True
    )
    address: Mapped[str] = mapped_column(String(64), primary_key=True)
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class AgentServerReplica(Base):
    """A running agent-server process; rows whose heartbeat is stale are dead replicas."""

    __tablename__ = "agent_server_replicas"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    # Where the other replicas send proxy requests for agents connected here.
    proxy_url: Mapped[str] = mapped_column(String(500))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class AgentConnection(Base):
    """One live tunnel: written on connect, deleted on disconnect or with its replica."""

    __tablename__ = "agent_connections"
    __table_args__ = (Index(None, "agent_id", "replica"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    agent_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("agents.id", ondelete="CASCADE"))
    token_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("agent_tokens.id", ondelete="CASCADE"), index=True
    )
    replica: Mapped[str] = mapped_column(
        String(200), ForeignKey("agent_server_replicas.name", ondelete="CASCADE"), index=True
    )
    agent_version: Mapped[str] = mapped_column(String(64))
    kubernetes_version: Mapped[str] = mapped_column(String(64))
    source_address: Mapped[str] = mapped_column(String(64))
    connected_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
