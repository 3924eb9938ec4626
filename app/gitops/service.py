"""Rules for manifest sources, environments, manual syncs, prune confirmations, rollbacks and
webhook deliveries."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Mapping

import structlog
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.agents.models import Agent
from app.audit.service import record_audit
from app.auth.models import Role
from app.auth.principal import Principal
from app.clusters import repository as clusters_repository
from app.core.db import async_session
from app.core.errors import ConflictError, NotFoundError
from app.core.jobs import actor_named, enqueue_after_commit
from app.core.settings import get_settings
from app.core.ssrf import resolve_target_async
from app.gitops import credentials, queue, repository, webhooks
from app.gitops.models import (
    FINISHED,
    Deployment,
    DeploymentStatus,
    GitOpsEnvironment,
    GitSource,
    RenderMode,
    Trigger,
    WebhookDelivery,
)
from app.gitops.refs import ref_matches
from app.gitops.schemas import (
    DeploymentRead,
    EnvironmentCreate,
    EnvironmentUpdate,
    HookAccepted,
    SourceCreate,
    SourceUpdate,
    SyncRequest,
)
from app.gitops_engine.manifests import digest
from app.projects.service import get_visible

log = structlog.get_logger(__name__)


def _url_schemes() -> tuple[str, ...]:
    # Plain http only where local networks are allowed (development, tests on loopback).
    return ("https", "http") if get_settings().allow_local_network else ("https",)


async def _check_url(url: str) -> None:
    settings = get_settings()
    schemes = ("ssh",) if credentials.is_ssh(url) else _url_schemes()
    await resolve_target_async(
        url, allow_local=settings.allow_local_network, allowed_schemes=schemes
    )


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value else None


# --- sources ---------------------------------------------------------------------------------


def _start_polling(session: AsyncSession, source: GitSource) -> None:
    """The poll chain of a source: each run re-enqueues itself after the interval."""
    if source.poll_interval_seconds > 0:
        enqueue_after_commit(
            session,
            actor_named("poll_source"),
            source.id,
            delay_ms=source.poll_interval_seconds * 1000,
        )


async def get_source(
    session: AsyncSession, principal: Principal, project_id: int, source_id: int, role: Role
) -> GitSource:
    principal.require_project(project_id, role)
    source = await repository.get_source(session, project_id, source_id)
    if source is None:
        raise NotFoundError("The source does not exist.", code="source_not_found")
    return source


async def create_source(
    session: AsyncSession, principal: Principal, project_id: int, data: SourceCreate
) -> tuple[GitSource, str | None]:
    """The new source, and its webhook secret when we generated it (shown once)."""
    principal.require_project(project_id, Role.maintainer)
    await get_visible(session, principal, project_id)
    if await repository.source_name_taken(session, project_id, data.name):
        raise ConflictError(f"The project has a source named {data.name!r}.", code="name_taken")
    given = credentials.checked(
        data.url,
        credentials.Credentials(_secret(data.token), _secret(data.deploy_key), data.known_hosts),
    )
    await _check_url(data.url)
    generated = None if data.webhook_secret else secrets.token_urlsafe(32)
    source = GitSource(
        project_id=project_id,
        name=data.name,
        url=data.url,
        token=given.token,
        deploy_key=given.deploy_key,
        known_hosts=given.known_hosts,
        ref=data.ref,
        paths=list(data.paths),
        render=data.render,
        helm_values_file=data.helm_values_file if data.render is RenderMode.helm else None,
        hook_id=secrets.token_urlsafe(24),
        webhook_secret=data.webhook_secret.get_secret_value() if data.webhook_secret else generated,
        poll_interval_seconds=data.poll_interval_seconds,
    )
    session.add(source)
    await session.flush()
    _start_polling(session, source)
    record_audit(
        session,
        principal,
        "gitops_source.create",
        "git_source",
        source.id,
        project_id=project_id,
        details={"name": source.name, "url": source.url},
    )
    return source, generated


async def update_source(
    session: AsyncSession,
    principal: Principal,
    project_id: int,
    source_id: int,
    data: SourceUpdate,
) -> GitSource:
    source = await get_source(session, principal, project_id, source_id, Role.maintainer)
    changes = data.model_dump(exclude_unset=True)
    url = data.url if data.url is not None else source.url
    if {"url", "token", "deploy_key", "known_hosts"} & changes.keys():
        await session.refresh(source, ["token", "deploy_key"])
        ssh = credentials.is_ssh(url)
        given = credentials.checked(
            url,
            credentials.Credentials(
                # Moving between https and ssh drops the other transport's credentials.
                token=(_secret(data.token) if "token" in changes else source.token)
                if not ssh
                else _secret(data.token),
                deploy_key=(_secret(data.deploy_key) or source.deploy_key) if ssh else None,
                known_hosts=(data.known_hosts or source.known_hosts) if ssh else None,
            ),
        )
        if data.url is not None:
            await _check_url(url)
        source.url = url
        source.token, source.deploy_key = given.token, given.deploy_key
        source.known_hosts = given.known_hosts
    if data.webhook_secret is not None:
        source.webhook_secret = data.webhook_secret.get_secret_value()
    for field in ("ref", "paths", "render", "helm_values_file"):
        if changes.get(field) is not None:
            setattr(source, field, getattr(data, field))
    if data.poll_interval_seconds is not None:
        was_off = source.poll_interval_seconds == 0
        source.poll_interval_seconds = data.poll_interval_seconds
        if was_off:
            _start_polling(session, source)
    record_audit(
        session,
        principal,
        "gitops_source.update",
        "git_source",
        source.id,
        project_id=project_id,
        details={"fields": sorted(changes)},
    )
    await session.flush()
    return source


async def delete_source(
    session: AsyncSession, principal: Principal, project_id: int, source_id: int
) -> None:
    source = await get_source(session, principal, project_id, source_id, Role.maintainer)
    used = await session.scalar(
        select(GitOpsEnvironment.id).where(GitOpsEnvironment.source_id == source_id).limit(1)
    )
    if used is not None:
        raise ConflictError("Environments still deploy from this source.", code="source_in_use")
    reader = await session.scalar(
        select(Agent.id).where(Agent.config_source_id == source_id).limit(1)
    )
    if reader is not None:
        raise ConflictError(
            "An agent reads its configuration from this source.", code="source_in_use"
        )
    record_audit(
        session,
        principal,
        "gitops_source.delete",
        "git_source",
        source_id,
        project_id=project_id,
        details={"name": source.name},
    )
    await session.delete(source)


# --- environments ----------------------------------------------------------------------------


async def get_environment(
    session: AsyncSession, principal: Principal, project_id: int, environment_id: int, role: Role
) -> GitOpsEnvironment:
    principal.require_project(project_id, role)
    environment = await repository.get_environment(session, project_id, environment_id)
    if environment is None:
        raise NotFoundError("The environment does not exist.", code="environment_not_found")
    return environment


async def create_environment(
    session: AsyncSession, principal: Principal, project_id: int, data: EnvironmentCreate
) -> GitOpsEnvironment:
    principal.require_project(project_id, Role.maintainer)
    await get_visible(session, principal, project_id)
    if await repository.get_source(session, project_id, data.source_id) is None:
        raise NotFoundError("The source does not exist.", code="source_not_found")
    if await clusters_repository.get(session, project_id, data.cluster_id) is None:
        raise NotFoundError("The cluster does not exist.", code="cluster_not_found")
    if await repository.environment_name_taken(session, project_id, data.name):
        raise ConflictError(
            f"The project has an environment named {data.name!r}.", code="name_taken"
        )
    environment = GitOpsEnvironment(
        project_id=project_id, inventory=[], drifted_objects=[], **data.model_dump()
    )
    session.add(environment)
    await session.flush()
    record_audit(
        session,
        principal,
        "gitops_environment.create",
        "gitops_environment",
        environment.id,
        project_id=project_id,
        details={"name": data.name, "cluster_id": data.cluster_id, "namespace": data.namespace},
    )
    return environment


async def update_environment(
    session: AsyncSession,
    principal: Principal,
    project_id: int,
    environment_id: int,
    data: EnvironmentUpdate,
) -> GitOpsEnvironment:
    environment = await get_environment(
        session, principal, project_id, environment_id, Role.maintainer
    )
    changes = {k: v for k, v in data.model_dump(exclude_unset=True).items() if v is not None}
    for field, value in changes.items():
        setattr(environment, field, value)
    record_audit(
        session,
        principal,
        "gitops_environment.update",
        "gitops_environment",
        environment.id,
        project_id=project_id,
        details={"fields": sorted(changes)},
    )
    await session.flush()
    return environment


async def delete_environment(
    session: AsyncSession, principal: Principal, project_id: int, environment_id: int
) -> None:
    """Forget the environment; what it deployed stays in the cluster."""
    environment = await get_environment(
        session, principal, project_id, environment_id, Role.maintainer
    )
    record_audit(
        session,
        principal,
        "gitops_environment.delete",
        "gitops_environment",
        environment_id,
        project_id=project_id,
        details={"name": environment.name},
    )
    await session.delete(environment)


async def request_drift_check(
    session: AsyncSession, principal: Principal, project_id: int, environment_id: int
) -> GitOpsEnvironment:
    environment = await get_environment(
        session, principal, project_id, environment_id, Role.developer
    )
    enqueue_after_commit(session, actor_named("check_drift"), environment.id)
    return environment


async def unlock(
    session: AsyncSession, principal: Principal, project_id: int, environment_id: int
) -> GitOpsEnvironment:
    environment = await get_environment(
        session, principal, project_id, environment_id, Role.maintainer
    )
    environment.locked = False
    record_audit(
        session,
        principal,
        "gitops_environment.unlock",
        "gitops_environment",
        environment_id,
        project_id=project_id,
    )
    await session.flush()
    return environment


async def sync(
    session: AsyncSession,
    principal: Principal,
    project_id: int,
    environment_id: int,
    data: SyncRequest,
) -> Deployment:
    """Queue a deployment of a given commit, or of the followed ref's head (developer)."""
    environment = await get_environment(
        session, principal, project_id, environment_id, Role.developer
    )
    source = await session.get_one(GitSource, environment.source_id)
    ref = source.ref
    env_id = environment.id

    def run(sync_session: Session) -> Deployment:
        env = sync_session.get_one(GitOpsEnvironment, env_id)
        return queue.request(
            sync_session,
            env,
            trigger=Trigger.manual,
            triggered_by=principal.audit_name,
            ref=ref,
            commit_sha=data.revision,
        )

    deployment = await session.run_sync(run)
    record_audit(
        session,
        principal,
        "gitops_environment.sync",
        "gitops_environment",
        env_id,
        project_id=project_id,
        details={"revision": data.revision, "deployment_id": deployment.id},
    )
    return deployment


# --- deployments -----------------------------------------------------------------------------


async def get_deployment(
    session: AsyncSession, principal: Principal, project_id: int, deployment_id: int, role: Role
) -> Deployment:
    principal.require_project(project_id, role)
    deployment = await repository.get_deployment(session, project_id, deployment_id)
    if deployment is None:
        raise NotFoundError("The deployment does not exist.", code="deployment_not_found")
    return deployment


async def confirm_prune(
    session: AsyncSession, principal: Principal, project_id: int, deployment_id: int
) -> Deployment:
    """Let a deployment's guarded prune go ahead (maintainer)."""
    deployment = await get_deployment(
        session, principal, project_id, deployment_id, Role.maintainer
    )
    if deployment.status != DeploymentStatus.awaiting_confirmation:
        raise ConflictError(
            "The deployment is not waiting for a prune confirmation.", code="nothing_to_confirm"
        )
    newer = await session.scalar(
        select(Deployment.id)
        .where(
            Deployment.environment_id == deployment.environment_id,
            Deployment.id > deployment.id,
        )
        .limit(1)
    )
    if newer is not None:
        raise ConflictError(
            "A newer deployment of this environment exists; it plans its own prune.",
            code="superseded",
        )
    deployment.prune_confirmed = True
    record_audit(
        session,
        principal,
        "deployment.confirm_prune",
        "deployment",
        deployment.id,
        project_id=project_id,
    )
    enqueue_after_commit(session, actor_named("prune_deployment"), deployment.id)
    return deployment


async def rollback(
    session: AsyncSession, principal: Principal, project_id: int, deployment_id: int
) -> Deployment:
    """Re-apply exactly what a past deployment applied (checked by digest), and lock the
    environment so no push deploys over it until it is unlocked (maintainer)."""
    target = await get_deployment(session, principal, project_id, deployment_id, Role.maintainer)
    manifests = await session.scalar(select(Deployment.manifests).where(Deployment.id == target.id))
    if manifests is None or target.digest is None:
        raise ConflictError(
            "That deployment recorded no applied manifests to roll back to.",
            code="nothing_to_roll_back_to",
        )
    if digest(manifests) != target.digest:
        raise ConflictError(
            "The recorded manifests do not match their digest.", code="digest_mismatch"
        )
    env_id, ref, commit, pinned = (
        target.environment_id,
        target.ref,
        target.commit_sha,
        target.digest,
    )

    def run(sync_session: Session) -> Deployment:
        env = sync_session.get_one(GitOpsEnvironment, env_id)
        env.locked = True
        return queue.request(
            sync_session,
            env,
            trigger=Trigger.rollback,
            triggered_by=principal.audit_name,
            ref=ref,
            commit_sha=commit,
            manifests=manifests,
            digest=pinned,
            rollback_of_id=deployment_id,
        )

    deployment = await session.run_sync(run)
    record_audit(
        session,
        principal,
        "deployment.rollback",
        "deployment",
        deployment.id,
        project_id=project_id,
        details={"rollback_of": deployment_id, "digest": pinned},
    )
    return deployment


SSE_POLL_SECONDS = 0.5
SSE_KEEPALIVE_SECONDS = 15.0


async def deployment_events(project_id: int, deployment_id: int) -> AsyncIterator[str]:
    """Server-Sent Events for one deployment, read from the database with a short poll (each
    poll its own short session, so a long stream holds no connection)."""
    last: str | None = None
    quiet = 0.0
    while True:
        async with async_session() as session:
            deployment = await repository.get_deployment(session, project_id, deployment_id)
            if deployment is None:
                yield "event: end\ndata: {}\n\n"
                return
            objects = await repository.deployment_objects(session, deployment_id)
            body = DeploymentRead.of(deployment, objects).model_dump_json()
            done = deployment.status in FINISHED or (
                deployment.status == DeploymentStatus.awaiting_confirmation
            )
        if body != last:
            yield f"event: deployment\ndata: {body}\n\n"
            last, quiet = body, 0.0
        elif quiet >= SSE_KEEPALIVE_SECONDS:
            yield ": keep-alive\n\n"
            quiet = 0.0
        if done:
            yield "event: end\ndata: {}\n\n"
            return
        await asyncio.sleep(SSE_POLL_SECONDS)
        quiet += SSE_POLL_SECONDS


# --- webhooks --------------------------------------------------------------------------------


async def receive_hook(
    session: AsyncSession, hook_id: str, headers: Mapping[str, str], body: bytes
) -> tuple[int, HookAccepted]:
    """Verify and record a delivery; the deployment work happens in an actor. Returns the
    HTTP status (202 accepted, 200 for a ping or a replayed delivery) and the answer."""
    source = await repository.source_for_hook(session, hook_id)
    if source is None:
        raise NotFoundError("No hook with that id.", code="hook_not_found")
    try:
        push = webhooks.parse(headers, body, source.webhook_secret)
    except webhooks.BadSignatureError:
        # Never the body: it is whatever an unauthenticated sender chose to send.
        log.warning("webhook_bad_signature", source_id=source.id, bytes=len(body))
        raise
    if push.kind == "ping":
        return 200, HookAccepted(status="pong")
    delivery = WebhookDelivery(
        source_id=source.id,
        delivery_key=push.delivery_key,
        provider=push.provider,
        event=push.event,
        ref=push.ref,
        commit_sha=push.commit,
        outcome="received" if push.kind == "push" else push.kind,
    )
    try:
        async with session.begin_nested():
            session.add(delivery)
    except IntegrityError:
        log.info("webhook_replayed", source_id=source.id, delivery_key=push.delivery_key)
        return 200, HookAccepted(status="duplicate")
    if push.kind != "push":
        return 202, HookAccepted(status="ignored", delivery_id=delivery.id)
    enqueue_after_commit(session, actor_named("handle_delivery"), delivery.id)
    return 202, HookAccepted(status="accepted", delivery_id=delivery.id)


def handle_delivery(session: Session, delivery_id: int) -> list[int]:
    """Queue a deployment of the pushed commit for every auto-syncing, unlocked environment
    of the source that follows the pushed ref (actor side). Returns the deployment ids."""
    delivery = session.get(WebhookDelivery, delivery_id)
    if delivery is None or delivery.outcome != "received":
        return []
    source = session.get_one(GitSource, delivery.source_id)
    if delivery.ref is None or not ref_matches(source.ref, delivery.ref):
        delivery.outcome = "ignored_ref"
        return []
    environments = session.scalars(
        select(GitOpsEnvironment).where(GitOpsEnvironment.source_id == source.id)
    ).all()
    ids: list[int] = []
    outcome = "no_environment"
    for environment in environments:
        if not environment.auto_sync:
            outcome = "auto_sync_off"
            continue
        if environment.locked:
            outcome = "environment_locked"
            continue
        if queue.newest_commit(session, environment.id) == delivery.commit_sha:
            outcome = "up_to_date"  # the same (repository, ref, commit) is deployed or queued
            continue
        poll = delivery.provider == "poll"
        deployment = queue.request(
            session,
            environment,
            trigger=Trigger.poll if poll else Trigger.delivery,
            triggered_by="poll" if poll else f"webhook:{delivery.provider}",
            ref=delivery.ref,
            commit_sha=delivery.commit_sha,
            delivery_id=delivery.id,
        )
        ids.append(deployment.id)
    delivery.outcome = "queued" if ids else outcome
    return ids
