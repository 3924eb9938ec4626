"""Database access of the agent server: agent token checks, replica and connection registry."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    String,
    and_,
    cast,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.agents.models import (
    AGENT_TOKEN_PREFIX,
    AccessAs,
    Agent,
    AgentAccess,
    AgentConnection,
    AgentServerReplica,
    AgentToken,
    AgentTokenSource,
)
from app.audit.models import AuditEvent
from app.auth.impersonation import KubeIdentity
from app.auth.models import AccessToken, Role
from app.auth.tokens import hash_token
from app.clusters.models import Cluster
from app.core.db import utcnow
from app.job_tokens.models import JobToken
from app.namespaces.models import NamespaceStatus, ProjectNamespace


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    agent_id: int
    project_id: int | None  # None: an instance-level agent
    token_id: int
    # Connections of this token registered on live replicas when it authenticated.
    live_connections: int = 0


@dataclass(frozen=True, slots=True)
class ProxyAccess:
    """An agent's owner and the access entry for one project (None: no entry)."""

    owner_project_id: int | None
    min_role: Role | None = None
    access_as: AccessAs | None = None


@dataclass(frozen=True, slots=True)
class JobAccess:
    """A CI job's record and the access entry of its project on one agent (None: no entry)."""

    project_id: int
    environment: str
    role: Role
    expires_at: datetime
    revoked_at: datetime | None
    min_role: Role | None = None
    access_as: AccessAs | None = None
    environments: list[str] | None = None


class AgentAuthError(Exception):
    """Why an agent's upgrade request is refused (always HTTP 401)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class ReplicaLocation:
    replica: str
    proxy_url: str


class AgentStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def authenticate_agent(self, raw: str, dead_after: float) -> AgentIdentity:
        if not raw.startswith(AGENT_TOKEN_PREFIX):
            raise AgentAuthError("invalid_token", "The token is not a clusterport agent token.")
        live = (
            select(func.count())
            .select_from(AgentConnection)
            .join(AgentServerReplica, AgentServerReplica.name == AgentConnection.replica)
            .where(
                AgentConnection.token_id == AgentToken.id,
                AgentServerReplica.heartbeat_at >= utcnow() - timedelta(seconds=dead_after),
            )
            .scalar_subquery()
        )
        query = (
            select(
                AgentToken.id,
                AgentToken.agent_id,
                AgentToken.expires_at,
                AgentToken.revoked_at,
                Agent.project_id,
                live.label("live"),
            )
            .join(Agent, Agent.id == AgentToken.agent_id)
            .where(AgentToken.token_hash == hash_token(raw))
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            raise AgentAuthError("invalid_token", "The agent token is not valid.")
        if row.revoked_at is not None:
            raise AgentAuthError("token_revoked", "The agent token has been revoked.")
        if row.expires_at is not None and row.expires_at <= utcnow():
            raise AgentAuthError("token_expired", "The agent token has expired.")
        return AgentIdentity(row.agent_id, row.project_id, row.id, int(row.live))

    async def proxy_access(self, agent_id: int, project_id: int | None) -> ProxyAccess:
        """The agent's project and its access entry for `project_id` (None: the entry for
        instance admin tokens), in one query. `LookupError` when the agent does not exist."""
        entry = AgentAccess.agent_id == Agent.id
        if project_id is None:
            entry = and_(entry, AgentAccess.project_id.is_(None))
        else:
            entry = and_(entry, AgentAccess.project_id == project_id)
        query = (
            select(Agent.project_id, AgentAccess.min_role, AgentAccess.access_as)
            .select_from(Agent)
            .outerjoin(AgentAccess, entry)
            .where(Agent.id == agent_id)
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            raise LookupError(agent_id)
        owner = None if row.project_id is None else int(row.project_id)
        if row.access_as is None:
            return ProxyAccess(owner)
        return ProxyAccess(owner, Role(row.min_role), AccessAs(row.access_as))

    async def job_access(self, job_id: int, agent_id: int) -> JobAccess | None:
        """The job's record and its project's entry on the agent, in one query; None when the
        job record is gone."""
        query = (
            select(
                JobToken.project_id,
                JobToken.environment,
                JobToken.role,
                JobToken.expires_at,
                JobToken.revoked_at,
                AgentAccess.min_role,
                AgentAccess.access_as,
                AgentAccess.environments,
            )
            .select_from(JobToken)
            .outerjoin(
                AgentAccess,
                and_(
                    AgentAccess.project_id == JobToken.project_id,
                    AgentAccess.agent_id == agent_id,
                ),
            )
            .where(JobToken.id == job_id)
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        job = JobAccess(
            int(row.project_id), row.environment, Role(row.role), row.expires_at, row.revoked_at
        )
        if row.access_as is None:
            return job
        return JobAccess(
            job.project_id,
            job.environment,
            job.role,
            job.expires_at,
            job.revoked_at,
            Role(row.min_role),
            AccessAs(row.access_as),
            row.environments,
        )

    async def namespace_identity(
        self, namespace_id: int, agent_id: int
    ) -> tuple[KubeIdentity, int] | None:
        """The service account a namespace kubeconfig acts as and the namespace's project, while
        the namespace is ready on a cluster reached through this agent; None otherwise (the
        credential is revoked)."""
        query = (
            select(
                ProjectNamespace.namespace,
                ProjectNamespace.service_account_name,
                ProjectNamespace.project_id,
            )
            .join(Cluster, Cluster.id == ProjectNamespace.cluster_id)
            .where(
                ProjectNamespace.id == namespace_id,
                ProjectNamespace.status == NamespaceStatus.ready,
                Cluster.agent_id == agent_id,
            )
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        identity = KubeIdentity.service_account(row.namespace, row.service_account_name)
        return identity, int(row.project_id)

    async def add_audit_events(self, rows: Sequence[dict[str, object]]) -> None:
        if rows:
            async with self.engine.begin() as conn:
                await conn.execute(insert(AuditEvent), list(rows))

    # -- replicas ------------------------------------------------------------------------------

    async def register_replica(self, name: str, proxy_url: str) -> None:
        now = utcnow()
        async with self.engine.begin() as conn:
            await conn.execute(delete(AgentServerReplica).where(AgentServerReplica.name == name))
            await conn.execute(
                insert(AgentServerReplica).values(
                    name=name, proxy_url=proxy_url, started_at=now, heartbeat_at=now
                )
            )

    async def heartbeat(
        self, name: str, proxy_url: str, connection_ids: Sequence[str], dead_after: float
    ) -> bool:
        """Mark this replica and its connections alive and forget dead replicas.

        Returns False when another replica had already forgotten this one (after a long pause):
        the caller then registers its connections again.
        """
        now = utcnow()
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(AgentServerReplica)
                .where(AgentServerReplica.name == name)
                .values(heartbeat_at=now)
            )
            alive = result.rowcount == 1
            if not alive:
                await conn.execute(
                    insert(AgentServerReplica).values(
                        name=name, proxy_url=proxy_url, started_at=now, heartbeat_at=now
                    )
                )
            if connection_ids and alive:
                await conn.execute(
                    update(AgentConnection)
                    .where(AgentConnection.id.in_(list(connection_ids)))
                    .values(last_heartbeat_at=now)
                )
            # Connections go with their replica (ON DELETE CASCADE).
            cutoff = now - timedelta(seconds=dead_after)
            await conn.execute(
                delete(AgentServerReplica).where(AgentServerReplica.heartbeat_at < cutoff)
            )
        return alive

    async def remove_replica(self, name: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(delete(AgentServerReplica).where(AgentServerReplica.name == name))

    async def locate(self, agent_id: int, dead_after: float) -> list[ReplicaLocation]:
        """Live replicas holding a connection of the agent, most recent connection first."""
        cutoff = utcnow() - timedelta(seconds=dead_after)
        query = (
            select(AgentServerReplica.name, AgentServerReplica.proxy_url)
            .join(AgentConnection, AgentConnection.replica == AgentServerReplica.name)
            .where(AgentConnection.agent_id == agent_id, AgentServerReplica.heartbeat_at >= cutoff)
            .order_by(AgentConnection.connected_at.desc())
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        seen: dict[str, ReplicaLocation] = {}
        for row in rows:
            seen.setdefault(row.name, ReplicaLocation(row.name, row.proxy_url))
        return list(seen.values())

    # -- connections ---------------------------------------------------------------------------

    async def add_connections(self, rows: Iterable[dict[str, object]]) -> list[str]:
        """Record new connections, mark their tokens used and audit source addresses a token
        never connected from before, in one transaction.

        Returns the ids of connections whose agent no longer exists (deleted meanwhile): they
        are not recorded, and their tokens are revoked, so the revocation watch closes them.
        """
        values = list(rows)
        if not values:
            return []
        async with self.engine.begin() as conn:
            agent_ids = {int(str(row["agent_id"])) for row in values}
            query = select(Agent.id, Agent.project_id).where(Agent.id.in_(agent_ids))
            existing = {int(r.id): r.project_id for r in await conn.execute(query)}
            gone = [str(row["id"]) for row in values if row["agent_id"] not in existing]
            values = [row for row in values if row["agent_id"] in existing]
            if not values:
                return gone
            token_ids = sorted({int(str(row["token_id"])) for row in values})
            await conn.execute(insert(AgentConnection), values)
            await conn.execute(
                update(AgentToken).where(AgentToken.id.in_(token_ids)).values(last_used_at=utcnow())
            )
            await self._audit_new_sources(conn, values, existing)
        return gone

    @staticmethod
    async def _audit_new_sources(
        conn: AsyncConnection, rows: list[dict[str, object]], projects: dict[int, int | None]
    ) -> None:
        now = utcnow()
        sources = {(int(str(row["token_id"])), str(row["source_address"])) for row in rows}
        dialect: Any = postgresql if conn.dialect.name == "postgresql" else sqlite
        inserted = (
            await conn.execute(
                dialect.insert(AgentTokenSource)
                .values([{"token_id": t, "address": a, "first_seen_at": now} for t, a in sources])
                .on_conflict_do_nothing()
                .returning(AgentTokenSource.token_id, AgentTokenSource.address)
            )
        ).all()
        if not inserted:
            return
        by_token = {int(str(row["token_id"])): row for row in rows}
        await conn.execute(
            insert(AuditEvent),
            [
                {
                    "project_id": projects[int(str(by_token[token_id]["agent_id"]))],
                    "actor": f"agent-token:{token_id}",
                    "action": "agent_token.new_source_address",
                    "target_type": "agent_token",
                    "target_id": str(token_id),
                    "details": {"address": address, "agent_id": by_token[token_id]["agent_id"]},
                    "created_at": now,
                }
                for token_id, address in sorted(inserted)
            ],
        )

    async def remove_connections(self, ids: Sequence[str]) -> None:
        if ids:
            async with self.engine.begin() as conn:
                await conn.execute(delete(AgentConnection).where(AgentConnection.id.in_(list(ids))))

    # -- revocation ----------------------------------------------------------------------------

    async def revoked_since(
        self, agents_since: datetime, api_since: datetime
    ) -> tuple[list[tuple[int, datetime]], list[tuple[str, datetime]]]:
        """(id, revoked_at) of agent tokens and (hash, revoked_at) of API tokens revoked since
        then: the connections and proxy streams they opened end. Every replica asks four times
        a second, so it is one statement outside a transaction (one round trip)."""
        agents = select(
            literal("agent").label("kind"),
            cast(AgentToken.id, String).label("key"),
            AgentToken.revoked_at,
        ).where(AgentToken.revoked_at >= agents_since)
        api = select(literal("api"), AccessToken.token_hash, AccessToken.revoked_at).where(
            AccessToken.revoked_at >= api_since
        )
        async with self._autocommit.connect() as conn:
            rows = (await conn.execute(union_all(agents, api))).all()
        return (
            [(int(key), at) for kind, key, at in rows if kind == "agent" and at is not None],
            [(key, at) for kind, key, at in rows if kind == "api" and at is not None],
        )

    async def unusable_tokens(self, token_ids: Sequence[int]) -> set[int]:
        """Of these token ids: the revoked, expired or deleted ones."""
        if not token_ids:
            return set()
        ids = list(token_ids)
        query = select(AgentToken.id).where(
            AgentToken.id.in_(ids),
            AgentToken.revoked_at.is_(None),
            or_(AgentToken.expires_at.is_(None), AgentToken.expires_at > utcnow()),
        )
        async with self.engine.connect() as conn:
            usable = {int(row.id) for row in await conn.execute(query)}
        return set(ids) - usable
