"""Actors for GitOps: deliveries become queued deployments; a deployment is fetched, rendered,
applied, pruned and watched until healthy. Each step is idempotent and resumable, and a wait
(for CRDs, for health) is a delayed re-enqueue, never a sleep."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import dramatiq
import structlog
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, undefer

from app.agents.models import Agent
from app.clusters.connection import ViaAgentConnection
from app.clusters.models import Cluster
from app.core.db import session_scope, utcnow
from app.core.jobs import enqueue_after_commit
from app.core.ssrf import UnsafeURLError
from app.gitops import agent_config, applier, git, queue, repository, service
from app.gitops.agent_config import Read
from app.gitops.errors import SourceError
from app.gitops.models import (
    Deployment,
    DeploymentObject,
    DeploymentStatus,
    DeploymentStep,
    GitOpsEnvironment,
    GitSource,
    RenderMode,
    SyncStatus,
    Trigger,
    WebhookDelivery,
)
from app.gitops.refs import is_pattern, ref_matches
from app.gitops.render import RenderSpec, render
from app.gitops.settings import get_gitops_settings
from app.gitops_engine.drift import is_drifted
from app.gitops_engine.health import HealthState
from app.gitops_engine.manifests import ManifestError, ObjectRef, digest
from app.gitops_engine.order import prune_order
from app.gitops_engine.plan import make_plan
from app.gitops_engine.policy import Target, prepare
from app.kube import KubeClient, KubeError
from app.kube.agent_apply import AgentApplyUnsupportedError
from workers.clusters import Connection, connection_of

log = structlog.get_logger(__name__)

CRD_WAIT_DELAY_MS = 250


@dramatiq.actor(max_retries=3)
def handle_delivery(delivery_id: int) -> None:
    """Read the configuration files of the agents configured from the pushed source, then
    queue deployments for the push (coalescing into queued ones)."""
    with session_scope() as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        if delivery is None or delivery.outcome != "received":
            return
        source = session.get_one(GitSource, delivery.source_id)
        follows = delivery.ref is not None and ref_matches(source.ref, delivery.ref)
        source_id, ref, pushed = source.id, delivery.ref, delivery.commit_sha
    reads = _read_agent_configs(source_id, ref, pushed) if follows else []
    with session_scope() as session:
        _apply_agent_configs(session, reads, source_id, pushed=True)
        ids = service.handle_delivery(session, delivery_id)
    log.info("delivery_handled", delivery_id=delivery_id, deployments=ids)


def _read_agent_configs(source_id: int, ref: str | None, pushed: str | None) -> list[Read]:
    """The configuration file of every agent configured from the source, at the head of the
    followed ref (webhooks may arrive out of order; the pushed commit if the ref is gone)."""
    with session_scope() as session:
        agents = agent_config.agents_configured_from(session, source_id)
        if not agents:
            return []
        source = session.scalar(
            select(GitSource)
            .where(GitSource.id == source_id)
            .options(*(undefer(c) for c in git.SECRETS))
        )
        assert source is not None
        remote = git.Remote.of(source)
    commit = pushed
    try:
        if ref is not None and not is_pattern(ref):
            try:
                commit = git.resolve_ref(remote, ref)
            except SourceError as exc:
                if exc.code != "commit_not_found" or pushed is None:
                    raise
        if commit is None:
            raise SourceError("commit_not_found", "The push names no commit.")
        repo = git.fetch(remote, commit, ref)
        return [
            Read(agent_id, commit, git.read_file(repo, commit, agent_config.config_path(name)))
            for agent_id, name in agents
        ]
    except SourceError as exc:
        log.info("agent_config_unreadable", source_id=source_id, code=exc.code)
        return [Read(agent_id, commit, None, exc) for agent_id, _name in agents]


def _apply_agent_configs(
    session: Session, reads: list[Read], source_id: int, *, pushed: bool
) -> None:
    """Apply what was read from `source_id`; with `pushed`, the push being handled deploys the
    new environments of that source, so only the others get a first deployment here."""
    for read in reads:
        # Locked: two pushes handled at once apply one after the other.
        agent = session.get(Agent, read.agent_id, with_for_update=True)
        if agent is None or agent.project_id is None or agent.config_source_id != source_id:
            continue
        created = agent_config.apply(session, agent, read)
        skip = source_id if pushed else None
        agent_config.deploy_created(session, agent, created, skip_source=skip)
        log.info(
            "agent_config_read",
            agent_id=agent.id,
            status=agent.config_status,
            code=agent.config_error_code,
        )


@dramatiq.actor(max_retries=3)
def load_agent_config(agent_id: int) -> None:
    """Read an agent's configuration now (when it is given a configuration source), without
    waiting for a push; its new environments deploy their source's head."""
    with session_scope() as session:
        agent = session.get(Agent, agent_id)
        if agent is None or agent.config_source_id is None:
            return
        source = session.get_one(GitSource, agent.config_source_id)
        source_id, ref = source.id, source.ref
    reads = [r for r in _read_agent_configs(source_id, ref, None) if r.agent_id == agent_id]
    with session_scope() as session:
        _apply_agent_configs(session, reads, source_id, pushed=False)


@dramatiq.actor(max_retries=3)
def run_deployment(environment_id: int) -> None:
    """Start the environment's queued deployment when none is running. Many of these may be
    enqueued for one environment; all but one find nothing to do."""
    with session_scope() as session:
        claimed = queue.claim_next(session, environment_id)
        if isinstance(claimed, queue.Wait):
            enqueue_after_commit(session, run_deployment, environment_id, delay_ms=claimed.delay_ms)
            return
        if claimed is None:
            return
        deployment_id = claimed.id
    _apply(deployment_id)


@dataclass(frozen=True)
class _Context:
    deployment_id: int
    environment_id: int
    target: Target
    prune: bool
    max_prune_share: float
    inventory: list[ObjectRef]
    manifests: list[dict[str, Any]] | None
    commit: str | None
    ref: str | None
    trigger: str
    remote: git.Remote
    render: RenderSpec
    connection: Connection | None


def _context(session: Session, deployment_id: int, step: DeploymentStep) -> _Context | None:
    deployment = session.scalar(
        select(Deployment)
        .where(Deployment.id == deployment_id)
        .options(undefer(Deployment.manifests))
    )
    if (
        deployment is None
        or deployment.status != DeploymentStatus.running
        or deployment.step != step
    ):
        return None
    environment = session.get_one(GitOpsEnvironment, deployment.environment_id)
    source = session.scalar(
        select(GitSource)
        .where(GitSource.id == environment.source_id)
        .options(*(undefer(c) for c in git.SECRETS))
    )
    assert source is not None
    cluster = session.get(Cluster, environment.cluster_id)
    return _Context(
        deployment_id=deployment.id,
        environment_id=environment.id,
        target=Target(
            namespace=environment.namespace,
            environment_id=environment.id,
            allow_cluster_scoped=environment.allow_cluster_scoped,
            extra_namespaces=tuple(environment.extra_namespaces),
        ),
        prune=environment.prune,
        max_prune_share=environment.max_prune_share,
        inventory=[ObjectRef.from_dict(d) for d in environment.inventory],
        manifests=deployment.manifests,
        commit=deployment.commit_sha,
        ref=deployment.ref,
        trigger=deployment.trigger,
        remote=git.Remote.of(source),
        render=RenderSpec(
            mode=RenderMode(source.render),
            paths=list(source.paths),
            namespace=environment.namespace,
            release=environment.name,
            helm_values_file=source.helm_values_file,
        ),
        connection=connection_of(cluster) if cluster is not None else None,
    )


def _fail(
    deployment_id: int,
    code: str,
    message: str,
    failed_object: str | None = None,
    *,
    inventory: list[ObjectRef] | None = None,
    objects: list[DeploymentObject] | None = None,
) -> None:
    with session_scope() as session:
        deployment = session.get(Deployment, deployment_id)
        if deployment is None or deployment.status != DeploymentStatus.running:
            return
        if inventory is not None:
            environment = session.get_one(GitOpsEnvironment, deployment.environment_id)
            environment.inventory = [r.to_dict() for r in sorted(inventory)]
        if objects is not None:
            _replace_objects(session, deployment_id, objects)
        queue.finish(
            session,
            deployment,
            DeploymentStatus.failed,
            code=code,
            message=message,
            failed_object=failed_object,
        )
    log.info("deployment_failed", deployment_id=deployment_id, code=code)


def _replace_objects(session: Session, deployment_id: int, objects: list[DeploymentObject]) -> None:
    session.execute(delete(DeploymentObject).where(DeploymentObject.deployment_id == deployment_id))
    for row in objects:
        row.deployment_id = deployment_id
        session.add(row)


def _row(ref: ObjectRef, action: str, result: str, **values: Any) -> DeploymentObject:
    return DeploymentObject(
        api_version=ref.api_version,
        kind=ref.kind,
        namespace=ref.namespace,
        name=ref.name,
        action=action,
        result=result,
        **values,
    )


def _commit_to_deploy(ctx: _Context) -> str:
    """Webhooks may arrive out of order, so a push to a branch deploys the branch's head when
    the deployment starts: the pushed commit or one pushed after it (after a force-push to an
    older commit, that older commit). Manual syncs to a revision and rollbacks keep theirs."""
    follows_branch = ctx.trigger == Trigger.delivery and (ctx.ref or "").startswith("refs/heads/")
    if ctx.commit is not None and not follows_branch:
        return ctx.commit
    try:
        return git.resolve_ref(ctx.remote, ctx.ref or "")
    except SourceError as exc:
        if ctx.commit is not None and exc.code == "commit_not_found":
            return ctx.commit  # the branch is gone since: deploy what was pushed
        raise


def _render(ctx: _Context) -> tuple[list[dict[str, Any]], str]:
    commit = _commit_to_deploy(ctx)
    repo = git.fetch(ctx.remote, commit, ctx.ref)
    with tempfile.TemporaryDirectory(prefix="clusterport-checkout-") as tmp:
        git.checkout(repo, commit, ctx.render.checkout_paths, Path(tmp))
        return render(Path(tmp), ctx.render), commit


@dramatiq.actor(max_retries=0)
def apply_deployment(deployment_id: int) -> None:
    """The apply step (also how it resumes after a crash or a wait for CRDs)."""
    _apply(deployment_id)


def _apply(deployment_id: int) -> None:
    with session_scope() as session:
        ctx = _context(session, deployment_id, DeploymentStep.apply)
    if ctx is None:
        return
    commit = ctx.commit
    try:
        if ctx.manifests is not None:
            rendered = ctx.manifests
        else:
            rendered, commit = _render(ctx)
    except SourceError as exc:
        _fail(deployment_id, exc.code, exc.message)
        return
    if ctx.connection is None:
        _fail(deployment_id, "no_credentials", "The cluster has no credentials to deploy with.")
        return
    old = set(ctx.inventory)
    try:
        with ctx.connection.client() as kube:
            prepared = prepare(rendered, ctx.target, applier.discovered_scopes(kube, rendered))
            plan = make_plan(
                prepared.refs, ctx.inventory, prune=ctx.prune, max_prune_share=ctx.max_prune_share
            )
            outcome = _apply_objects(ctx.connection, kube, prepared.objects)
            if outcome.waiting_for_crds:
                with session_scope() as session:
                    waiting = session.get(Deployment, deployment_id)
                    if waiting is None:
                        return
                    waiting.updated_at = utcnow()
                    enqueue_after_commit(
                        session, apply_deployment, deployment_id, delay_ms=CRD_WAIT_DELAY_MS
                    )
                return
            rows = [_row(r, "apply", "applied") for r in outcome.applied]
            if outcome.failed is not None:
                assert outcome.error is not None
                owned = sorted(old | set(outcome.applied))
                rows.append(_row(outcome.failed, "apply", "failed", code=outcome.error.code))
                applier.write_inventory(kube, ctx.target.namespace, ctx.environment_id, owned)
                _fail(
                    deployment_id,
                    outcome.error.code,
                    outcome.error.message,
                    str(outcome.failed),
                    inventory=owned,
                    objects=rows,
                )
                return
            pruned: list[ObjectRef] = []
            if plan.prune and not plan.needs_confirmation:
                pruned, failed, error = applier.prune(kube, plan.prune)
                rows += [_row(r, "prune", "pruned") for r in pruned]
                if failed is not None and error is not None:
                    owned = sorted((old | set(plan.apply)) - set(pruned))
                    rows.append(_row(failed, "prune", "failed", code=error.code))
                    applier.write_inventory(kube, ctx.target.namespace, ctx.environment_id, owned)
                    _fail(
                        deployment_id,
                        error.code,
                        error.message,
                        str(failed),
                        inventory=owned,
                        objects=rows,
                    )
                    return
            else:
                rows += [_row(r, "prune_pending", "pending") for r in plan.prune]
            owned = sorted((set(plan.apply) | set(plan.prune)) - set(pruned))
            applier.write_inventory(kube, ctx.target.namespace, ctx.environment_id, owned)
    except ManifestError as exc:
        _fail(deployment_id, exc.code, exc.message)
        return
    except (KubeError, UnsafeURLError) as exc:
        _fail(deployment_id, exc.code, exc.message)
        return
    with session_scope() as session:
        deployment = session.get(Deployment, deployment_id)  # None: its environment was deleted
        if deployment is None or deployment.status != DeploymentStatus.running:
            return
        environment = session.get_one(GitOpsEnvironment, deployment.environment_id)
        environment.inventory = [r.to_dict() for r in owned]
        _replace_objects(session, deployment_id, rows)
        deployment.commit_sha = commit
        deployment.manifests = rendered
        deployment.digest = digest(rendered)
        deployment.prune_guard_reasons = plan.guard_reasons if plan.prune else []
        deployment.applied_at = utcnow()
        deployment.step = DeploymentStep.health
        enqueue_after_commit(session, check_health, deployment_id)
    log.info("deployment_applied", deployment_id=deployment_id, objects=len(rows))


def _apply_objects(
    connection: Connection, kube: KubeClient, objects: list[dict[str, Any]]
) -> applier.ApplyOutcome:
    """Through an agent that offers it, the agent applies the objects in-cluster (pull-based);
    otherwise (a direct cluster, an older agent) the worker applies them itself."""
    if isinstance(connection, ViaAgentConnection):
        try:
            return applier.apply_through_agent(connection, objects)
        except AgentApplyUnsupportedError:
            log.info("agent_apply_unsupported", agent_id=connection.agent_id)
    return applier.apply(kube, objects)


@dramatiq.actor(max_retries=0)
def check_health(deployment_id: int) -> None:
    """Look at the applied objects' health; finish, or look again shortly."""
    with session_scope() as session:
        ctx = _context(session, deployment_id, DeploymentStep.health)
        if ctx is None:
            return
        applied = [
            ObjectRef(o.api_version, o.kind, o.namespace, o.name)
            for o in session.scalars(
                select(DeploymentObject).where(
                    DeploymentObject.deployment_id == deployment_id,
                    DeploymentObject.action == "apply",
                )
            )
        ]
    if ctx.connection is None:
        _fail(deployment_id, "no_credentials", "The cluster has no credentials to deploy with.")
        return
    try:
        with ctx.connection.client() as kube:
            states = applier.health(kube, applied)
    except (KubeError, UnsafeURLError) as exc:
        _fail(deployment_id, exc.code, exc.message)
        return
    with session_scope() as session:
        deployment = session.get(Deployment, deployment_id)  # None: its environment was deleted
        if deployment is None or deployment.status != DeploymentStatus.running:
            return
        failed = None
        progressing = None
        for row in session.scalars(
            select(DeploymentObject).where(DeploymentObject.deployment_id == deployment_id)
        ):
            if row.action != "apply":
                continue
            ref = ObjectRef(row.api_version, row.kind, row.namespace, row.name)
            health = states.get(ref)
            row.health = health.state if health else HealthState.healthy
            row.code = health.code if health else None
            row.reason = health.reason if health else None
            if health and health.state is HealthState.failed and failed is None:
                failed = (ref, health)
            elif health and health.state is HealthState.progressing and progressing is None:
                progressing = ref
        if failed is not None:
            ref, health = failed
            queue.finish(
                session,
                deployment,
                DeploymentStatus.failed,
                code=health.code,
                message=health.reason,
                failed_object=str(ref),
            )
        elif progressing is None:
            if deployment.prune_guard_reasons:
                deployment.status = DeploymentStatus.awaiting_confirmation
                deployment.step = None
                enqueue_after_commit(session, run_deployment, deployment.environment_id)
            else:
                queue.finish(session, deployment, DeploymentStatus.succeeded)
            _schedule_drift_check(session, deployment)
        elif deployment.health_deadline_at is not None and utcnow() > deployment.health_deadline_at:
            queue.finish(
                session,
                deployment,
                DeploymentStatus.timed_out,
                code="health_timeout",
                message="The objects did not become healthy within the health timeout.",
                failed_object=str(progressing),
            )
        else:
            deployment.updated_at = utcnow()
            enqueue_after_commit(
                session,
                check_health,
                deployment_id,
                delay_ms=get_gitops_settings().health_poll_ms,
            )


@dramatiq.actor(max_retries=0)
def prune_deployment(deployment_id: int) -> None:
    """Carry out a confirmed, guarded prune (unless a newer deployment took over)."""
    with session_scope() as session:
        deployment = session.get(Deployment, deployment_id)
        if (
            deployment is None
            or deployment.status != DeploymentStatus.awaiting_confirmation
            or not deployment.prune_confirmed
        ):
            return
        newer = session.scalar(
            select(Deployment.id)
            .where(
                Deployment.environment_id == deployment.environment_id,
                Deployment.id > deployment_id,
            )
            .limit(1)
        )
        if newer is not None:
            return
        environment = session.get_one(GitOpsEnvironment, deployment.environment_id)
        cluster = session.get(Cluster, environment.cluster_id)
        connection = connection_of(cluster) if cluster is not None else None
        pending = list(
            session.scalars(
                select(DeploymentObject).where(
                    DeploymentObject.deployment_id == deployment_id,
                    DeploymentObject.action == "prune_pending",
                )
            )
        )
        refs = [ObjectRef(o.api_version, o.kind, o.namespace, o.name) for o in pending]
        inventory = {ObjectRef.from_dict(d) for d in environment.inventory}
        namespace, environment_id = environment.namespace, environment.id
    error: KubeError | UnsafeURLError | None = None
    pruned: list[ObjectRef] = []
    if connection is None:
        return
    try:
        with connection.client() as kube:
            pruned, _, error = applier.prune(kube, prune_order(refs))
            remaining = sorted(inventory - set(pruned))
            applier.write_inventory(kube, namespace, environment_id, remaining)
    except (KubeError, UnsafeURLError) as exc:
        error = exc
    with session_scope() as session:
        deployment = session.get(Deployment, deployment_id)
        if deployment is None:
            return
        environment = session.get_one(GitOpsEnvironment, deployment.environment_id)
        environment.inventory = [r.to_dict() for r in sorted(inventory - set(pruned))]
        for row in session.scalars(
            select(DeploymentObject).where(
                DeploymentObject.deployment_id == deployment_id,
                DeploymentObject.action == "prune_pending",
            )
        ):
            if ObjectRef(row.api_version, row.kind, row.namespace, row.name) in set(pruned):
                row.action, row.result = "prune", "pruned"
        if error is not None:
            queue.finish(
                session,
                deployment,
                DeploymentStatus.failed,
                code=error.code,
                message=error.message,
            )
        else:
            deployment.prune_guard_reasons = []
            queue.finish(session, deployment, DeploymentStatus.succeeded)


def _schedule_drift_check(session: Session, deployment: Deployment) -> None:
    delay = get_gitops_settings().drift_interval_seconds * 1000
    enqueue_after_commit(
        session, check_drift, deployment.environment_id, deployment.id, delay_ms=delay
    )


def _last_applied(session: Session, environment_id: int) -> Deployment | None:
    """The environment's newest deployment that applied everything it rendered."""
    return session.scalar(
        select(Deployment)
        .where(
            Deployment.environment_id == environment_id,
            Deployment.status.in_(
                [DeploymentStatus.succeeded, DeploymentStatus.awaiting_confirmation]
            ),
        )
        .order_by(Deployment.id.desc())
        .limit(1)
        .options(undefer(Deployment.manifests))
    )


@dramatiq.actor(max_retries=0)
def check_drift(environment_id: int, chain_of: int | None = None) -> None:
    """Compare the live objects with what the last successful deployment applied; record
    `in_sync` or `drifted` with the drifted objects, and with self-heal queue a re-apply of
    exactly those manifests. `chain_of`: the deployment whose periodic chain this is; the chain
    ends when a newer deployment (with its own chain) exists."""
    with session_scope() as session:
        environment = session.get(GitOpsEnvironment, environment_id)
        if environment is None:
            return
        last = _last_applied(session, environment_id)
        if last is None or last.manifests is None:
            return
        if chain_of is not None and last.id != chain_of:
            return
        busy = queue.running(session, environment_id) is not None
        cluster = session.get(Cluster, environment.cluster_id)
        connection = connection_of(cluster) if cluster is not None else None
        target = Target(
            namespace=environment.namespace,
            environment_id=environment.id,
            allow_cluster_scoped=environment.allow_cluster_scoped,
            extra_namespaces=tuple(environment.extra_namespaces),
        )
        manifests, last_id = last.manifests, last.id
        pinned = (last.ref, last.commit_sha, last.digest)
    if busy or connection is None:
        drifted = None
    else:
        try:
            with connection.client() as kube:
                prepared = prepare(manifests, target, applier.discovered_scopes(kube, manifests))
                drifted = [
                    ObjectRef.of(obj)
                    for obj in prepared.objects
                    if is_drifted(obj, kube.objects.get(*_ref_args(ObjectRef.of(obj))))
                ]
        except (KubeError, UnsafeURLError, ManifestError) as exc:
            log.info("drift_check_failed", environment_id=environment_id, code=exc.code)
            drifted = None
    with session_scope() as session:
        environment = session.get(GitOpsEnvironment, environment_id)
        if environment is None:
            return
        if drifted is not None:
            environment.sync_status = SyncStatus.drifted if drifted else SyncStatus.in_sync
            environment.drifted_objects = [r.to_dict() for r in drifted]
            environment.drift_checked_at = utcnow()
            if drifted and environment.self_heal:
                queue.request(
                    session,
                    environment,
                    trigger=Trigger.self_heal,
                    triggered_by="drift-check",
                    ref=pinned[0],
                    commit_sha=pinned[1],
                    manifests=manifests,
                    digest=pinned[2],
                )
        if chain_of is not None:
            delay = get_gitops_settings().drift_interval_seconds * 1000
            enqueue_after_commit(session, check_drift, environment_id, last_id, delay_ms=delay)


def _ref_args(ref: ObjectRef) -> tuple[str, str, str, str]:
    return ref.api_version, ref.kind, ref.namespace, ref.name


MIN_POLL_SECONDS = 10


@dramatiq.actor(max_retries=0)
def poll_source(source_id: int) -> None:
    """Poll fallback: `git ls-remote` the source's ref; a commit no webhook announced becomes a
    delivery of its own (provider `poll`, recorded once per commit) and deploys like one. Then
    look again after the interval. A second chain for the same source (the record was polled
    recently) ends itself."""
    with session_scope() as session:
        source = session.scalar(
            select(GitSource)
            .where(GitSource.id == source_id)
            .options(*(undefer(c) for c in git.SECRETS))
        )
        if source is None or source.poll_interval_seconds <= 0:
            return
        interval = max(MIN_POLL_SECONDS, source.poll_interval_seconds)
        last = source.last_polled_at
        if last is not None and utcnow() - last < timedelta(seconds=interval / 2):
            return
        remote, ref = git.Remote.of(source), source.ref
        seen = source.last_polled_commit
    head = None
    if not is_pattern(ref):
        try:
            head = git.resolve_ref(remote, ref)
        except SourceError as exc:
            log.info("poll_failed", source_id=source_id, code=exc.code)
    reads = _read_agent_configs(source_id, ref, head) if head not in (None, seen) else []
    with session_scope() as session:
        source = session.get(GitSource, source_id)
        if source is None:
            return
        source.last_polled_at = utcnow()
        if head is not None and head != source.last_polled_commit:
            source.last_polled_commit = head
            delivery = WebhookDelivery(
                source_id=source_id,
                delivery_key=f"poll:{head}",
                provider="poll",
                event="poll",
                ref=ref,
                commit_sha=head,
                outcome="received",
            )
            exists = session.scalar(
                select(WebhookDelivery.id).where(
                    WebhookDelivery.source_id == source_id,
                    WebhookDelivery.delivery_key == delivery.delivery_key,
                )
            )
            if exists is None:
                session.add(delivery)
                session.flush()
                _apply_agent_configs(session, reads, source_id, pushed=True)
                service.handle_delivery(session, delivery.id)
        enqueue_after_commit(session, poll_source, source_id, delay_ms=interval * 1000)


@dramatiq.actor(max_retries=0)
def resume_deployment(deployment_id: int) -> None:
    """For the periodic reconciler: continue a deployment whose job was lost."""
    with session_scope() as session:
        deployment = session.get(Deployment, deployment_id)
        if deployment is None:
            return
        deployment.updated_at = utcnow()
        if deployment.status == DeploymentStatus.queued:
            enqueue_after_commit(session, run_deployment, deployment.environment_id)
        elif deployment.status == DeploymentStatus.running:
            step = apply_deployment if deployment.step == DeploymentStep.apply else check_health
            enqueue_after_commit(session, step, deployment_id)


@dramatiq.actor(max_retries=0)
def reconcile_gitops() -> None:
    """Sent periodically by every worker: resume deployments whose job was lost, and restart
    poll chains that stopped."""
    with session_scope() as session:
        stalled = repository.pending_deployments_without_live_job(session)
        for deployment_id, _environment_id, _status in stalled:
            enqueue_after_commit(session, resume_deployment, deployment_id)
        sources = repository.sources_with_stale_poll(session)
        for source_id in sources:
            enqueue_after_commit(session, poll_source, source_id)
    if stalled or sources:
        log.info("gitops_reconciled", deployments=len(stalled), polls=len(sources))


__all__ = [
    "apply_deployment",
    "check_drift",
    "check_health",
    "handle_delivery",
    "load_agent_config",
    "poll_source",
    "prune_deployment",
    "reconcile_gitops",
    "resume_deployment",
    "run_deployment",
]
