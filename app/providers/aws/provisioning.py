"""EKS provisioning as a step machine: each run does one step, saves, and says when to run next.

Steps: assume the role -> create the stack -> poll it (delayed re-enqueue, never a sleep) ->
configure the cluster -> done. Every step is idempotent, so a redelivered message or a run
after a crash ends where a single run would. A message carries the record's `run_seq`; runs
with an older number are dropped, and a row lock keeps two runs of one record apart. Whatever
way provisioning ends, the temporary AWS credentials are cleared in the same transaction.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.aws import cloudformation, sts
from app.aws.cloudformation import StackPhase
from app.aws.credentials import TemporaryCredentials
from app.aws.eks_token import build_eks_token
from app.aws.errors import AwsCredentialsExpiredError, AwsError, AwsNotFoundError
from app.clusters.models import AuthorizationType, Cluster, ClusterStatus, KubernetesPlatform
from app.core.settings import get_settings
from app.core.ssrf import UnsafeURLError
from app.kube import KubeClient
from app.kube.errors import KubeError
from app.providers.aws import configure, template
from app.providers.aws.errors import ProvisioningError
from app.providers.aws.models import TERMINAL_STEPS, EksProvider, Step
from app.providers.aws.settings import EksSettings, get_eks_settings

log = structlog.get_logger(__name__)

_STACK_STATUS = re.compile(r"^[A-Z_]{1,64}$")


@dataclass(frozen=True)
class NextRun:
    """The run to enqueue once this transaction commits."""

    provider_id: int
    run_seq: int
    delay_seconds: float


def session_name(provider: EksProvider) -> str:
    """The AssumeRole session name, naming the cluster so CloudTrail shows who acted."""
    return f"clusterport-cluster-{provider.cluster_id}"


def _stored_credentials(provider: EksProvider) -> TemporaryCredentials | None:
    if not (
        provider.access_key_id
        and provider.secret_access_key
        and provider.session_token
        and provider.credentials_expire_at
    ):
        return None
    return TemporaryCredentials(
        access_key_id=provider.access_key_id,
        secret_access_key=provider.secret_access_key,
        session_token=provider.session_token,
        expiration=provider.credentials_expire_at,
    )


def clear_credentials(provider: EksProvider) -> None:
    """Forget the temporary credentials (provisioning ended, or they stopped working)."""
    provider.access_key_id = None
    provider.secret_access_key = None
    provider.session_token = None
    provider.credentials_expire_at = None


def credentials(
    provider: EksProvider, settings: EksSettings, now: datetime
) -> TemporaryCredentials:
    """The stored credentials, assuming the role again first when they expire within the margin."""
    stored = _stored_credentials(provider)
    margin = timedelta(seconds=settings.credential_refresh_margin_seconds)
    if stored is not None and not stored.expires_within(margin, now=now):
        return stored
    fresh = sts.assume_role(
        role_arn=provider.role_arn,
        external_id=provider.external_id,
        session_name=session_name(provider),
        region=provider.region,
        duration_seconds=settings.role_session_seconds,
    )
    provider.access_key_id = fresh.access_key_id
    provider.secret_access_key = fresh.secret_access_key
    provider.session_token = fresh.session_token
    provider.credentials_expire_at = fresh.expiration
    log.info("eks_credentials_assumed", provider_id=provider.id, refreshed=stored is not None)
    return fresh


def _move(provider: EksProvider, step: Step, now: datetime) -> None:
    provider.step = step
    provider.step_started_at = now


def _assume_role(provider: EksProvider, cluster: Cluster, s: EksSettings, now: datetime) -> float:
    credentials(provider, s, now)
    _move(provider, Step.create_stack, now)
    return 0.0


def _create_stack(provider: EksProvider, cluster: Cluster, s: EksSettings, now: datetime) -> float:
    creds = credentials(provider, s, now)
    name = template.stack_name(provider.cluster_id)
    provider.stack_id = cloudformation.create_stack(
        region=provider.region,
        credentials=creds,
        name=name,
        template_body=template.template_body(),
        parameters=template.stack_parameters(
            cluster_name=provider.eks_cluster_name,
            kubernetes_version=provider.kubernetes_version,
            service_role_arn=provider.service_role_arn,
            security_group_id=provider.security_group_id,
            vpc_id=provider.vpc_id,
            subnet_ids=list(provider.subnet_ids),
            node_count=provider.node_count,
            instance_type=provider.instance_type,
            key_name=provider.key_name,
        ),
        tags={"clusterport:cluster-id": str(provider.cluster_id)},
    )
    provider.stack_name = name
    provider.stack_created_at = provider.stack_created_at or now
    _move(provider, Step.poll_stack, now)
    return s.poll_initial_delay_seconds


def _describe(provider: EksProvider, creds: TemporaryCredentials) -> cloudformation.StackState:
    if provider.stack_name is None:  # set by the create_stack step, so never expected
        raise ProvisioningError("StackNotFound")
    try:
        state = cloudformation.describe_stack(
            region=provider.region, credentials=creds, name=provider.stack_name
        )
    except AwsNotFoundError as exc:
        raise ProvisioningError("StackNotFound") from exc
    provider.stack_status = state.status if _STACK_STATUS.match(state.status) else "UNKNOWN"
    return state


def _poll_stack(provider: EksProvider, cluster: Cluster, s: EksSettings, now: datetime) -> float:
    state = _describe(provider, credentials(provider, s, now))
    provider.polls += 1
    if state.phase is StackPhase.COMPLETE:
        _move(provider, Step.configure, now)
        return 0.0
    if state.phase is StackPhase.FAILED:
        raise ProvisioningError(provider.stack_status or "UNKNOWN")
    started = provider.stack_created_at or provider.step_started_at
    if now - started >= timedelta(seconds=s.timeout_seconds):
        raise ProvisioningError("ProvisioningTimeout")
    return s.poll_interval_seconds


def _ca_pem(data: str) -> str:
    try:
        pem = base64.b64decode(data, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ProvisioningError("InvalidStackOutputs") from exc
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise ProvisioningError("InvalidStackOutputs")
    return pem


def _configure(
    provider: EksProvider, cluster: Cluster, s: EksSettings, now: datetime
) -> float | None:
    creds = credentials(provider, s, now)
    outputs = _describe(provider, creds).outputs
    try:
        endpoint = outputs[template.OUTPUT_ENDPOINT]
        ca_data = outputs[template.OUTPUT_CA_DATA]
        node_role_arn = outputs[template.OUTPUT_NODE_ROLE]
    except KeyError as exc:
        raise ProvisioningError("StackOutputsMissing") from exc
    if not endpoint.startswith("https://"):
        raise ProvisioningError("InvalidStackOutputs")
    ca_pem = _ca_pem(ca_data)
    token = build_eks_token(
        region=provider.region, credentials=creds, cluster_name=provider.eks_cluster_name
    )
    # The endpoint comes from the customer's account: the SSRF guard checks it at connect time.
    with KubeClient.from_platform(
        endpoint, ca_pem, token.token, allow_local=get_settings().allow_local_network
    ) as kube:
        version = kube.version()
        configure.map_node_role(kube, node_role_arn)
        service_account_token = configure.ensure_service_account(kube)
    if service_account_token is None:
        # The token controller fills the Secret shortly; look again later, within the limit.
        if now - provider.step_started_at >= timedelta(seconds=s.timeout_seconds):
            raise ProvisioningError("ServiceAccountTokenTimeout")
        return s.retry_delay_seconds
    platform = cluster.platform or KubernetesPlatform(cluster_id=cluster.id, api_url=endpoint)
    platform.api_url = endpoint
    platform.ca_pem = ca_pem
    platform.token = service_account_token
    platform.authorization_type = AuthorizationType.rbac
    cluster.platform = platform
    cluster.status = ClusterStatus.connected
    cluster.error_code = None
    cluster.kubernetes_version = version.git_version
    cluster.last_checked_at = now
    _finish(provider, Step.done, now)
    log.info("eks_cluster_connected", provider_id=provider.id, cluster_id=cluster.id)
    return None


_STEPS = {
    Step.assume_role: _assume_role,
    Step.create_stack: _create_stack,
    Step.poll_stack: _poll_stack,
    Step.configure: _configure,
}


def _finish(provider: EksProvider, step: Step, now: datetime) -> None:
    _move(provider, step, now)
    provider.finished_at = now
    provider.next_run_at = None
    clear_credentials(provider)


def _fail(
    provider: EksProvider, cluster: Cluster, code: str, s: EksSettings, now: datetime
) -> None:
    if s.delete_stack_on_failure and provider.stack_name:
        try:
            cloudformation.delete_stack(
                region=provider.region,
                credentials=credentials(provider, s, now),
                name=provider.stack_name,
            )
        except AwsError as exc:
            # Best effort: the cluster is errored either way; the code says why deletion failed.
            log.warning("eks_stack_delete_failed", provider_id=provider.id, code=exc.code)
    provider.error_code = code
    cluster.status = ClusterStatus.errored
    cluster.error_code = code
    _finish(provider, Step.failed, now)
    log.warning("eks_provisioning_failed", provider_id=provider.id, code=code)


def _is_transient(exc: Exception) -> bool:
    if isinstance(exc, AwsError):
        return exc.retryable or isinstance(exc, AwsCredentialsExpiredError)
    if isinstance(exc, UnsafeURLError):
        # A new cluster's endpoint name can take a moment to appear in DNS.
        return exc.code == "unresolvable_host"
    return isinstance(exc, KubeError) and exc.transient


def run_step(
    session: Session, provider_id: int, run_seq: int, *, now: datetime | None = None
) -> NextRun | None:
    """Run the record's current step if `run_seq` is current; return the next run, if any."""
    now = now or datetime.now(UTC)
    provider = session.execute(
        select(EksProvider).where(EksProvider.id == provider_id).with_for_update(skip_locked=True)
    ).scalar_one_or_none()
    if provider is None or provider.run_seq != run_seq or provider.step in TERMINAL_STEPS:
        return None  # gone, being run right now, or a stale duplicate
    cluster = session.get(Cluster, provider.cluster_id)
    if cluster is None:
        return None
    s = get_eks_settings()
    step = Step(provider.step)
    try:
        delay = _STEPS[step](provider, cluster, s, now)
        provider.transient_failures = 0
    except (AwsError, KubeError, UnsafeURLError) as exc:
        if not _is_transient(exc):
            _fail(provider, cluster, exc.code, s, now)
            return None
        if isinstance(exc, AwsCredentialsExpiredError):
            clear_credentials(provider)  # the next run assumes the role again
        provider.transient_failures += 1
        if provider.transient_failures >= s.max_transient_failures:
            _fail(provider, cluster, exc.code, s, now)
            return None
        log.info("eks_step_retry", provider_id=provider.id, step=step, code=exc.code)
        delay = s.retry_delay_seconds
    except ProvisioningError as exc:
        _fail(provider, cluster, exc.code, s, now)
        return None
    if delay is None:
        return None
    provider.run_seq += 1
    provider.next_run_at = now + timedelta(seconds=delay)
    return NextRun(provider.id, provider.run_seq, delay)


def stalled_runs(session: Session, *, now: datetime | None = None) -> list[NextRun]:
    """Unfinished records whose next run was due a while ago and never happened."""
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(seconds=get_eks_settings().stall_after_seconds)
    rows = session.execute(
        select(EksProvider.id, EksProvider.run_seq).where(
            EksProvider.step.not_in([s.value for s in TERMINAL_STEPS]),
            EksProvider.next_run_at < cutoff,
        )
    ).all()
    return [NextRun(provider_id, seq, 0.0) for provider_id, seq in rows]


def fail_overdue(session: Session, *, now: datetime | None = None) -> int:
    """End records running far past the time limit (a step that keeps crashing, say).

    Whatever goes wrong, provisioning reaches a terminal state and drops the credentials.
    """
    now = now or datetime.now(UTC)
    s = get_eks_settings()
    cutoff = now - timedelta(seconds=s.timeout_seconds * 2 + s.stall_after_seconds)
    providers = session.execute(
        select(EksProvider)
        .where(
            EksProvider.step.not_in([step.value for step in TERMINAL_STEPS]),
            EksProvider.started_at < cutoff,
        )
        .with_for_update(skip_locked=True)
    ).scalars()
    count = 0
    for provider in providers:
        cluster = session.get(Cluster, provider.cluster_id)
        if cluster is not None:
            _fail(provider, cluster, "ProvisioningTimeout", s, now)
            count += 1
    return count
