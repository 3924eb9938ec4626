"""The deployment queue of an environment: coalescing, one deployment at a time, and the
per-project rate limit. Synchronous (actors call it; the API through `run_sync`).

A request for a deployment either creates the environment's one queued deployment or, when one
is already waiting, points it at the newer commit (a burst ends as one deployment of the newest
commit). A running deployment is never cut off: the queued one starts when it finishes. When the
project has started too many deployments in the last minute, the queued one waits, still
following the newest commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.db import utcnow
from app.core.jobs import actor_named, enqueue_after_commit
from app.gitops.models import (
    Deployment,
    DeploymentStatus,
    DeploymentStep,
    GitOpsEnvironment,
    Trigger,
)
from app.gitops.settings import get_gitops_settings

RATE_WINDOW = timedelta(minutes=1)
RATE_LIMITED_RETRY_MS = 5_000


def lock_environment(session: Session, environment_id: int) -> GitOpsEnvironment | None:
    """The environment row, locked until commit (Postgres); SQLite serialises writers anyway."""
    return session.scalar(
        select(GitOpsEnvironment).where(GitOpsEnvironment.id == environment_id).with_for_update()
    )


def request(
    session: Session,
    environment: GitOpsEnvironment,
    *,
    trigger: Trigger,
    triggered_by: str,
    ref: str | None,
    commit_sha: str | None,
    delivery_id: int | None = None,
    manifests: list[dict[str, Any]] | None = None,
    digest: str | None = None,
    rollback_of_id: int | None = None,
) -> Deployment:
    """Queue a deployment of the environment, folding it into the one already queued."""
    lock_environment(session, environment.id)
    queued = session.scalar(
        select(Deployment)
        .where(
            Deployment.environment_id == environment.id,
            Deployment.status == DeploymentStatus.queued,
        )
        .order_by(Deployment.id.desc())
        .limit(1)
    )
    if queued is None:
        queued = Deployment(
            project_id=environment.project_id,
            environment_id=environment.id,
            status=DeploymentStatus.queued,
            coalesced=0,
        )
        session.add(queued)
    else:
        queued.coalesced += 1
    queued.trigger = trigger
    queued.triggered_by = triggered_by
    queued.ref = ref
    queued.commit_sha = commit_sha
    queued.delivery_id = delivery_id
    queued.manifests = manifests
    queued.digest = digest
    queued.rollback_of_id = rollback_of_id
    queued.updated_at = utcnow()
    session.flush()
    enqueue_after_commit(session, actor_named("run_deployment"), environment.id)
    return queued


def newest_commit(session: Session, environment_id: int) -> str | None:
    """The commit of the environment's newest deployment that is queued, running or applied
    (a failed one does not count: the same commit may be tried again)."""
    return session.scalar(
        select(Deployment.commit_sha)
        .where(
            Deployment.environment_id == environment_id,
            Deployment.status.in_(
                [
                    DeploymentStatus.queued,
                    DeploymentStatus.running,
                    DeploymentStatus.succeeded,
                    DeploymentStatus.awaiting_confirmation,
                ]
            ),
        )
        .order_by(Deployment.id.desc())
        .limit(1)
    )


def running(session: Session, environment_id: int) -> Deployment | None:
    return session.scalar(
        select(Deployment).where(
            Deployment.environment_id == environment_id,
            Deployment.status == DeploymentStatus.running,
        )
    )


@dataclass(frozen=True)
class Wait:
    """Not yet: look again after `delay_ms` (rate limit, or a burst still arriving)."""

    delay_ms: int


def _settle_delay(session: Session, queued: Deployment, now: datetime) -> int:
    """Milliseconds the queued deployment should still wait for a burst to end. One that
    waited behind another deployment (or follows one that just ended) starts only once no
    delivery has changed it for the quiet period, so a burst of any length within the maximum
    wait ends as one more deployment; an idle environment starts at once."""
    settings = get_gitops_settings()
    quiet = timedelta(milliseconds=settings.coalesce_quiet_ms)
    if now - queued.created_at >= timedelta(milliseconds=settings.coalesce_max_wait_ms):
        return 0
    recent = session.scalar(
        select(Deployment.id)
        .where(
            Deployment.environment_id == queued.environment_id,
            Deployment.id != queued.id,
            Deployment.finished_at > now - quiet,
        )
        .limit(1)
    )
    if queued.coalesced == 0 and recent is None:
        return 0
    remaining = queued.updated_at + quiet - now
    return max(0, int(remaining.total_seconds() * 1000))


def claim_next(session: Session, environment_id: int) -> Deployment | Wait | None:
    """Start the environment's queued deployment unless one is running (it waits; the one that
    finishes wakes it), a burst is still arriving, or the project is over its rate (`Wait`).
    None when there is nothing to start."""
    environment = lock_environment(session, environment_id)
    if environment is None or running(session, environment_id) is not None:
        return None
    queued = session.scalar(
        select(Deployment)
        .where(
            Deployment.environment_id == environment_id,
            Deployment.status == DeploymentStatus.queued,
        )
        .order_by(Deployment.id)
        .limit(1)
    )
    if queued is None:
        return None
    now = utcnow()
    started = session.scalar(
        select(func.count(Deployment.id)).where(
            Deployment.project_id == environment.project_id,
            Deployment.started_at > now - RATE_WINDOW,
        )
    )
    if (started or 0) >= get_gitops_settings().project_deployments_per_minute:
        return Wait(RATE_LIMITED_RETRY_MS)
    settle = _settle_delay(session, queued, now)
    if settle > 0:
        return Wait(settle)
    queued.status = DeploymentStatus.running
    queued.step = DeploymentStep.apply
    queued.started_at = now
    queued.health_deadline_at = now + timedelta(seconds=environment.health_timeout_seconds)
    return queued


def finish(
    session: Session,
    deployment: Deployment,
    status: DeploymentStatus,
    *,
    code: str | None = None,
    message: str | None = None,
    failed_object: str | None = None,
) -> None:
    """End a deployment and let the environment's next queued one start."""
    deployment.status = status
    deployment.step = None
    deployment.finished_at = utcnow()
    deployment.error_code = code
    deployment.error_message = message
    deployment.failed_object = failed_object
    enqueue_after_commit(session, actor_named("run_deployment"), deployment.environment_id)
