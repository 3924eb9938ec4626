"""Actors for project namespaces: create or repair one in its cluster, and remove it."""

from __future__ import annotations

from datetime import timedelta

import dramatiq
import structlog

from app.clusters.models import Cluster
from app.core.db import session_scope, utcnow
from app.core.jobs import enqueue_after_commit
from app.core.outages import MAX_BACKOFF_MS, MIN_BACKOFF_MS, is_transient, retry_transient
from app.core.ssrf import UnsafeURLError
from app.kube import KubeError
from app.namespaces import provisioner
from app.namespaces.models import NamespaceStatus, ProjectNamespace
from workers.clusters import Connection, connection_of, namespace_spec, retry_later, will_retry

log = structlog.get_logger(__name__)

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
    """Store a final outcome unless the record was deleted or is being deleted meanwhile."""
    with session_scope() as session:
        row = session.get(ProjectNamespace, namespace_id)
        if row is None or row.status == NamespaceStatus.deleting:
            return
        for field, value in values.items():
            setattr(row, field, value)
        row.settled()


def _fail(namespace_id: int, code: str) -> None:
    _record(namespace_id, status=NamespaceStatus.failed, error_code=code, last_synced_at=utcnow())
    log.warning("namespace_failed", namespace_id=namespace_id, error_code=code)


def _failed(
    namespace_id: int, exc: KubeError | UnsafeURLError, *, deleting: bool = False
) -> dramatiq.Retry | None:
    """Record a failed attempt: still pending with `last_error` and `retry_at` when it is
    retried (the Retry to raise is returned), else final."""
    with session_scope() as session:
        row = session.get(ProjectNamespace, namespace_id)
        if row is None or (row.status == NamespaceStatus.deleting) != deleting:
            return None
        if will_retry(exc, row.last_error):
            return retry_later(row, exc)
        if is_transient(exc):
            # Out of quick retries while the cluster is away: the reconciler takes over with a
            # longer backoff, and ends the namespace `failed` if the cluster stays away.
            row.retrying(exc.code, utcnow())
            return None
        row.error_code = exc.code
        row.last_synced_at = utcnow()
        row.settled()
        # Final either way; for a removal, deleting again retries.
        row.status = NamespaceStatus.failed
    log.warning("namespace_failed", namespace_id=namespace_id, error_code=exc.code)
    return None


@dramatiq.actor(retry_when=retry_transient, min_backoff=MIN_BACKOFF_MS, max_backoff=MAX_BACKOFF_MS)
def ensure_namespace(namespace_id: int, polls: int = 0) -> None:
    """Create or repair the namespace, service account, token Secret and RoleBinding, then
    store the encrypted token. Transient failures are retried (the namespace stays
    `provisioning` with `last_error` and `retry_at`); final ones end in `failed` with a code."""
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
        retry = _failed(namespace_id, exc)
        if retry is not None:
            raise retry from None
        return
    if token is None:
        if polls >= TOKEN_POLLS:
            _fail(namespace_id, "token_not_issued")
            return
        with session_scope() as session:
            row = session.get(ProjectNamespace, namespace_id)
            if row is None or row.status != NamespaceStatus.provisioning:
                return
            # Tells the reconciler this namespace has a live job until then.
            row.retry_at = utcnow() + timedelta(milliseconds=TOKEN_POLL_DELAY_MS)
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
    """Delete the namespace in the cluster (only if it is ours), then the record. A final
    failure ends in `failed` with the code: deleting again retries."""
    loaded = _load(namespace_id, status=NamespaceStatus.deleting)
    if loaded is None:
        return
    spec, connection = loaded
    if connection is not None:
        try:
            with connection.client() as kube:
                provisioner.remove(kube, spec)
        except (KubeError, UnsafeURLError) as exc:
            retry = _failed(namespace_id, exc, deleting=True)
            if retry is not None:
                raise retry from None
            return
    with session_scope() as session:
        row = session.get(ProjectNamespace, namespace_id)
        if row is not None and row.status == NamespaceStatus.deleting:
            session.delete(row)
