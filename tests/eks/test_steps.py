"""Provisioning steps one at a time (the actor called directly), for failures and retries.

Each test drives the actor by hand, so it decides what AWS looks like between two steps. The
messages the steps enqueue go to RabbitMQ and no worker consumes them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import boto3
import pytest

from app.core.db import session_scope
from app.providers.aws import provisioning
from app.providers.aws.models import EksProvider
from tests.conftest import Api
from tests.eks.conftest import eks_body, provider_of, raw_credentials
from tests.support.moto_server import MotoServer, assumed_roles
from workers.eks import eks_provision


async def create_cluster(admin: Api, name: str) -> tuple[int, int]:
    project = await admin.create_project()
    response = await admin.post(f"/api/v1/projects/{project['id']}/clusters/eks", eks_body(name))
    assert response.status_code == 201, response.text
    cluster_id: int = response.json()["cluster_id"]
    return cluster_id, provider_of(cluster_id).id


def step(provider_id: int, cluster_id: int) -> EksProvider:
    """Run the current step once with the current run number and return the record after it."""
    eks_provision(provider_id, provider_of(cluster_id).run_seq)
    return provider_of(cluster_id)


async def test_rollback_complete_errors_with_the_status_and_drops_credentials(
    admin: Api, eks_env: dict[str, str], eks_name: str, moto: MotoServer
) -> None:
    cluster_id, provider_id = await create_cluster(admin, eks_name)
    assert step(provider_id, cluster_id).step == "create_stack"
    assert raw_credentials(cluster_id)[0] is not None  # encrypted, not the key itself
    assert raw_credentials(cluster_id)[0] != provider_of(cluster_id).access_key_id
    after_create = step(provider_id, cluster_id)
    assert after_create.step == "poll_stack"
    # What CloudFormation does when a resource fails: roll back, then ROLLBACK_COMPLETE.
    moto.set_stack_status(f"clusterport-cluster-{cluster_id}", "ROLLBACK_COMPLETE")

    failed = step(provider_id, cluster_id)

    assert (failed.step, failed.error_code) == ("failed", "ROLLBACK_COMPLETE")
    assert raw_credentials(cluster_id) == (None, None, None, None)
    view = (await admin.get(f"/api/v1/clusters/{cluster_id}/provisioning")).json()
    assert view["status"] == "errored"
    assert view["error"]["code"] == "ROLLBACK_COMPLETE"
    assert view["has_credentials"] is False
    # Without CLUSTERPORT_EKS_DELETE_STACK_ON_FAILURE the failed stack stays for inspection.
    assert moto.stack_names() == [f"clusterport-cluster-{cluster_id}"]


async def test_failed_stack_is_deleted_when_configured(
    admin: Api,
    eks_env: dict[str, str],
    eks_name: str,
    moto: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.providers.aws.settings import get_eks_settings

    monkeypatch.setenv("CLUSTERPORT_EKS_DELETE_STACK_ON_FAILURE", "true")
    get_eks_settings.cache_clear()
    cluster_id, provider_id = await create_cluster(admin, eks_name)
    step(provider_id, cluster_id)
    step(provider_id, cluster_id)
    moto.set_stack_status(f"clusterport-cluster-{cluster_id}", "CREATE_FAILED")

    failed = step(provider_id, cluster_id)

    assert (failed.step, failed.error_code) == ("failed", "CREATE_FAILED")
    assert moto.stack_names() == []
    assert raw_credentials(cluster_id) == (None, None, None, None)


async def test_access_denied_on_assume_role(
    admin: Api, eks_env: dict[str, str], eks_name: str, moto: MotoServer
) -> None:
    cluster_id, provider_id = await create_cluster(admin, eks_name)
    # clusterport's identity exists but no policy lets it assume the customer's role.
    iam = boto3.client("iam", endpoint_url=moto.endpoint_url, region_name="us-east-1")
    iam.create_user(UserName="clusterport-without-rights")
    key = iam.create_access_key(UserName="clusterport-without-rights")["AccessKey"]
    moto.set_iam_enforced(True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        patch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        failed = step(provider_id, cluster_id)

    assert (failed.step, failed.error_code) == ("failed", "AccessDenied")
    assert raw_credentials(cluster_id) == (None, None, None, None)
    assert moto.stack_names() == []
    view = (await admin.get(f"/api/v1/clusters/{cluster_id}/provisioning")).json()
    assert view["status"] == "errored"
    assert view["error"]["code"] == "AccessDenied"
    assert "not authorized" not in view["error"]["message"]  # AWS's own text is never kept


async def test_stack_still_in_progress_after_the_limit_times_out(
    admin: Api, eks_env: dict[str, str], eks_name: str, moto: MotoServer
) -> None:
    cluster_id, provider_id = await create_cluster(admin, eks_name)
    step(provider_id, cluster_id)
    step(provider_id, cluster_id)
    moto.set_stack_status(f"clusterport-cluster-{cluster_id}", "CREATE_IN_PROGRESS")
    created_at = provider_of(cluster_id).stack_created_at
    assert created_at is not None

    still = step(provider_id, cluster_id)
    assert (still.step, still.polls, still.stack_status) == ("poll_stack", 1, "CREATE_IN_PROGRESS")
    # The next poll, run 30 minutes (the default limit) after the stack was created.
    with session_scope() as session:
        following = provisioning.run_step(
            session, provider_id, still.run_seq, now=created_at + timedelta(minutes=30)
        )
    assert following is None

    failed = provider_of(cluster_id)
    assert (failed.step, failed.error_code) == ("failed", "ProvisioningTimeout")
    assert raw_credentials(cluster_id) == (None, None, None, None)


async def test_credentials_are_refreshed_before_they_expire(
    admin: Api,
    eks_env: dict[str, str],
    eks_name: str,
    moto: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.providers.aws.settings import get_eks_settings

    # The shortest session AWS grants (15 minutes), so expiry comes before the 30-minute limit.
    monkeypatch.setenv("CLUSTERPORT_EKS_ROLE_SESSION_SECONDS", "900")
    get_eks_settings.cache_clear()
    cluster_id, provider_id = await create_cluster(admin, eks_name)
    step(provider_id, cluster_id)
    step(provider_id, cluster_id)
    moto.set_stack_status(f"clusterport-cluster-{cluster_id}", "CREATE_IN_PROGRESS")
    before = provider_of(cluster_id)
    assert before.credentials_expire_at is not None
    sessions = len(assumed_roles())

    # A poll well before expiry reuses the credentials.
    with session_scope() as session:
        provisioning.run_step(session, provider_id, before.run_seq)
    reused = provider_of(cluster_id)
    assert reused.access_key_id == before.access_key_id
    assert len(assumed_roles()) == sessions

    # A poll four minutes before expiry (inside the five-minute margin) assumes the role again.
    near_expiry = before.credentials_expire_at - timedelta(minutes=4)
    with session_scope() as session:
        following = provisioning.run_step(session, provider_id, reused.run_seq, now=near_expiry)
    assert following is not None
    refreshed = provider_of(cluster_id)
    assert refreshed.access_key_id != before.access_key_id
    assert refreshed.credentials_expire_at is not None
    assert refreshed.credentials_expire_at > before.credentials_expire_at
    assert len(assumed_roles()) == sessions + 1
    assert refreshed.polls == 2


async def test_duplicate_and_stale_messages_do_nothing(
    admin: Api, eks_env: dict[str, str], eks_name: str, moto: MotoServer
) -> None:
    cluster_id, provider_id = await create_cluster(admin, eks_name)
    eks_provision(provider_id, 0)
    eks_provision(provider_id, 0)  # redelivered: its run number is no longer current
    eks_provision(provider_id, 7)  # never issued

    provider = provider_of(cluster_id)
    assert (provider.step, provider.run_seq) == ("create_stack", 1)
    assert len(assumed_roles()) == 1


async def test_create_stack_after_a_crash_before_commit_makes_one_stack(
    admin: Api, eks_env: dict[str, str], eks_name: str, moto: MotoServer
) -> None:
    cluster_id, provider_id = await create_cluster(admin, eks_name)
    step(provider_id, cluster_id)
    seq = provider_of(cluster_id).run_seq
    # The stack is created in AWS, then the worker dies before its transaction commits.
    with pytest.raises(RuntimeError), session_scope() as session:
        provisioning.run_step(session, provider_id, seq)
        raise RuntimeError("worker died")
    assert provider_of(cluster_id).step == "create_stack"
    assert moto.stack_names() == [f"clusterport-cluster-{cluster_id}"]

    eks_provision(provider_id, seq)  # the redelivered message

    provider = provider_of(cluster_id)
    assert provider.step == "poll_stack"
    assert provider.stack_id is not None
    assert moto.stack_names() == [f"clusterport-cluster-{cluster_id}"]


async def test_reconciler_finds_stalled_records_and_ends_hopeless_ones(
    admin: Api, eks_env: dict[str, str], eks_name: str, moto: MotoServer
) -> None:
    cluster_id, provider_id = await create_cluster(admin, eks_name)
    provider = step(provider_id, cluster_id)
    assert provider.next_run_at is not None
    with session_scope() as session:
        assert provisioning.stalled_runs(session, now=provider.next_run_at) == []
        late = provider.next_run_at + timedelta(minutes=5)
        runs = provisioning.stalled_runs(session, now=late)
    assert [(r.provider_id, r.run_seq) for r in runs] == [(provider_id, provider.run_seq)]

    # Far past the limit (a step that keeps crashing, say): the reconciler ends it.
    with session_scope() as session:
        ended = provisioning.fail_overdue(session, now=datetime.now(UTC) + timedelta(hours=2))
    assert ended == 1
    failed = provider_of(cluster_id)
    assert (failed.step, failed.error_code) == ("failed", "ProvisioningTimeout")
    assert raw_credentials(cluster_id) == (None, None, None, None)


async def test_aws_unreachable_is_retried_then_errored(
    admin: Api,
    eks_env: dict[str, str],
    eks_name: str,
    moto: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.aws.settings import get_aws_settings

    cluster_id, provider_id = await create_cluster(admin, eks_name)
    # Nothing listens on this loopback port: every AWS call fails to connect.
    monkeypatch.setenv("CLUSTERPORT_AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("CLUSTERPORT_AWS_MAX_ATTEMPTS", "1")
    get_aws_settings.cache_clear()

    for attempt in range(1, 5):
        provider = step(provider_id, cluster_id)
        assert (provider.step, provider.transient_failures) == ("assume_role", attempt)
    failed = step(provider_id, cluster_id)

    assert (failed.step, failed.error_code) == ("failed", "EndpointUnreachable")
    view = (await admin.get(f"/api/v1/clusters/{cluster_id}/provisioning")).json()
    assert view["status"] == "errored"
