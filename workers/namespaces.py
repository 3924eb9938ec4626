"""Actors for project namespaces: create or repair one in its cluster, and remove it."""

from __future__ import annotations

import dramatiq

from app.clusters.models import Cluster
from app.core.db import session_scope, utcnow
from app.core.jobs import enqueue_after_commit
from app.core.ssrf import UnsafeURLError
from app.kube import KubeError
from app.namespaces import provisioner
from app.namespaces.models import NamespaceStatus, ProjectNamespace
from workers.clusters import (
    MAX_BACKOFF_MS,
    MIN_BACKOFF_MS,
    Connection,
    connection_of,
    is_transient,
    namespace_spec,
    retry_transient,
)

# The cluster's token controller fills the token Secret within seconds; look again this often,
# this many times (a re-enqueue with a delay: a worker never sleeps waiting for it).
TOKEN_POLL_DELAY_MS = 1_000
TOKEN_POLLS = 60


def _load(
    namespace_id: int, *, status: NamespaceStatus | None = None
) -> tuple[provisioner.NamespaceSpec, Connection | None] | None:
    """The namespace's spec and its cluster's connection; None when the record is gone or not
    in the wanted state (deleting, when creating; anything but deleting, when removing)."""
    with session_scope() as session:
        row = session.get(ProjectNamespace, namespace_id)
        if row is None:
            return None
        deleting = row.status == NamespaceStatus.deleting
        if deleting != (status is NamespaceStatus.deleting):
            return None
        cluster = session.get(Cluster, row.cluster_id)
        connection = connection_of(cluster) if cluster is not None else None
        return namespace_spec(row), connection


def _record(namespace_id: int, **values: object) -> None:
    """Store an outcome unless the record was deleted or is being deleted meanwhile."""
    with session_scope() as session:
        row = session.get(ProjectNamespace, namespace_id)
        if row is None or row.status == NamespaceStatus.deleting:
            return
        for field, value in values.items():
            setattr(row, field, value)


def _fail(namespace_id: int, code: str) -> None:
    _record(namespace_id, status=NamespaceStatus.failed, error_code=code, last_synced_at=utcnow())


@dramatiq.actor(retry_when=retry_transient, min_backoff=MIN_BACKOFF_MS, max_backoff=MAX_BACKOFF_MS)
def ensure_namespace(namespace_id: int, polls: int = 0) -> None:
    """Create or repair the namespace, service account, token Secret and RoleBinding, then
    store the encrypted token. Failures end in status `failed` with a code."""
    loaded = _load(namespace_id)
    if loaded is None:
        return
    spec, connection = loaded
    if connection is None:
        _fail(namespace_id, "no_credentials")
        return
    try:
        with connection.client() as kube:
            token = provisioner.ensure(kube, spec)
    except (KubeError, UnsafeURLError) as exc:
        _fail(namespace_id, exc.code)
        if is_transient(exc):
            raise
        return
    if token is None:
        if polls >= TOKEN_POLLS:
            _fail(namespace_id, "token_not_issued")
            return
        with session_scope() as session:
            enqueue_after_commit(
                session, ensure_namespace, namespace_id, polls + 1, delay_ms=TOKEN_POLL_DELAY_MS
            )
        return
    _record(
        namespace_id,
        service_account_token=token,
        status=NamespaceStatus.ready,
        error_code=None,
        last_synced_at=utcnow(),
    )


@dramatiq.actor(retry_when=retry_transient, min_backoff=MIN_BACKOFF_MS, max_backoff=MAX_BACKOFF_MS)
def remove_namespace(namespace_id: int) -> None:
    """Delete the namespace in the cluster (only if it is ours), then the record."""
    loaded = _load(namespace_id, status=NamespaceStatus.deleting)
    if loaded is None:
        return
    spec, connection = loaded
    if connection is not None:
        try:
            with connection.client() as kube:
                provisioner.remove(kube, spec)
        except (KubeError, UnsafeURLError) as exc:
            with session_scope() as session:
                row = session.get(ProjectNamespace, namespace_id)
                if row is not None:
                    row.error_code = exc.code
            if is_transient(exc):
                raise
            return
    with session_scope() as session:
        row = session.get(ProjectNamespace, namespace_id)
        if row is not None and row.status == NamespaceStatus.deleting:
            session.delete(row)
