"""The EKS API: validation, roles, the project's external ID, and `clusterport clusters wait`."""

from __future__ import annotations

import argparse
import io
from typing import Any

import pytest
from sqlalchemy import func, select

from app.clusters.models import Cluster
from app.core.cli import CLIError
from app.core.db import session_scope
from app.providers.aws.cli import (
    EXIT_CONNECTED,
    EXIT_ERRORED,
    EXIT_UNAVAILABLE,
    add_wait_parser,
    cmd_clusters_wait,
    wait_for_cluster,
)
from app.providers.aws.models import EksProvider
from tests.conftest import Api
from tests.eks.conftest import eks_body, provider_of
from tests.eks.eks_front import EksFront
from tests.support.moto_server import MotoServer


def record_counts() -> tuple[int, int]:
    with session_scope() as session:
        clusters = session.execute(select(func.count()).select_from(Cluster)).scalar_one()
        providers = session.execute(select(func.count()).select_from(EksProvider)).scalar_one()
    return clusters, providers


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("role_arn", "arn:aws:iam::12345:role/short-account"),
        ("role_arn", "arn:aws:iam::111122223333:user/not-a-role"),
        ("role_arn", "arn:aws-cn:iam::111122223333:role/other-partition"),
        ("service_role_arn", "eks-service"),
        ("external_id", "x"),
        ("external_id", "has spaces in it"),
        ("region", "mars-north-1"),
        ("region", "cn-north-1"),
        ("kubernetes_version", "1.20"),
        ("kubernetes_version", "2.0"),
        ("node_count", 0),
        ("node_count", 101),
        ("instance_type", "large"),
        ("key_name", ""),
        ("vpc_id", "vpc-xyz"),
        ("subnet_ids", ["subnet-0123456789abcdef0"]),
        ("subnet_ids", ["subnet-0123456789abcdef0", "subnet-0123456789abcdef0"]),
        ("subnet_ids", ["subnet-0123456789abcdef0", "sg-0123456789abcdef0"]),
        ("security_group_id", "subnet-0123456789abcdef0"),
        ("unknown_field", "x"),
    ],
)
async def test_invalid_aws_fields_are_422_and_write_nothing(
    admin: Api, field: str, value: Any
) -> None:
    project = await admin.create_project()
    response = await admin.post(
        f"/api/v1/projects/{project['id']}/clusters/eks", eks_body("bad", **{field: value})
    )

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_failed"
    assert any(field in d["field"] for d in error["details"])
    if isinstance(value, str) and len(value) > 3:
        assert value not in response.text  # input is never echoed back
    assert record_counts() == (0, 0)


async def test_other_providers_and_bad_names_are_refused(admin: Api) -> None:
    project = await admin.create_project()
    path = f"/api/v1/projects/{project['id']}/clusters/eks"
    assert (await admin.post(path, {**eks_body("ok"), "provider": "gcp"})).status_code == 422
    assert (await admin.post(path, eks_body("Not_A_Label"))).status_code == 422
    assert (await admin.post(path, eks_body("ok") | {"aws": None})).status_code == 422
    assert record_counts() == (0, 0)


async def test_roles_names_and_the_external_id(admin: Api, moto: MotoServer) -> None:
    project = await admin.create_project()
    path = f"/api/v1/projects/{project['id']}/clusters/eks"
    developer = admin.as_token(await admin.create_project_token(project["id"], "developer"))
    maintainer = admin.as_token(await admin.create_project_token(project["id"], "maintainer"))
    other = await admin.create_project("other")
    outsider = admin.as_token(await admin.create_project_token(other["id"], "maintainer"))

    denied = await developer.post(path, eks_body("dev"))
    assert (denied.status_code, denied.json()["error"]["code"]) == (403, "insufficient_role")
    assert (await outsider.post(path, eks_body("x"))).status_code == 404

    external = await maintainer.get(f"/api/v1/projects/{project['id']}/eks/external-id")
    assert external.status_code == 200
    external_id = external.json()["external_id"]
    again = await maintainer.get(f"/api/v1/projects/{project['id']}/eks/external-id")
    assert again.json()["external_id"] == external_id
    assert (
        await developer.get(f"/api/v1/projects/{project['id']}/eks/external-id")
    ).status_code == 403

    first = await maintainer.post(path, eks_body("prod"))
    assert first.status_code == 201, first.text
    assert first.json()["external_id"] == external_id
    assert "access_key" not in first.text and "session_token" not in first.text
    # Callers cannot choose the external ID: it is always the project's own.
    own = await maintainer.post(
        path, eks_body("own", external_id="customer-chosen-id") | {"environment_scope": "staging"}
    )
    assert own.status_code == 422, own.text
    assert own.json()["error"]["details"][0]["field"] == "body.aws.external_id"
    taken = await maintainer.post(path, eks_body("prod") | {"environment_scope": "review/*"})
    assert (taken.status_code, taken.json()["error"]["code"]) == (409, "cluster_name_taken")

    cluster_id = first.json()["cluster_id"]
    reporter = admin.as_token(await admin.create_project_token(project["id"], "reporter"))
    for who, shown in ((reporter, None), (developer, None), (maintainer, external_id)):
        view = await who.get(f"/api/v1/clusters/{cluster_id}/provisioning")
        assert view.status_code == 200
        assert view.json()["external_id"] == shown
    assert (
        external_id not in (await reporter.get(f"/api/v1/clusters/{cluster_id}/provisioning")).text
    )
    hidden = await outsider.get(f"/api/v1/clusters/{cluster_id}/provisioning")
    assert hidden.status_code == 404


async def test_clusters_wait_follows_provisioning_to_the_end(
    admin: Api, worker: Any, eks_env: dict[str, str], eks_front: EksFront, eks_name: str
) -> None:
    project = await admin.create_project()
    created = await admin.post(f"/api/v1/projects/{project['id']}/clusters/eks", eks_body(eks_name))
    cluster_id = created.json()["cluster_id"]
    out = io.StringIO()
    admin.client.headers["Authorization"] = f"Bearer {admin.token}"

    code = await wait_for_cluster(admin.client, cluster_id, out=out, interval=0.1)

    assert code == EXIT_CONNECTED, out.getvalue()
    lines = out.getvalue().splitlines()
    assert lines[-1] == f"cluster {cluster_id} is connected"
    assert lines[-2].startswith("[" + "#" * 30 + "] done")
    assert len(lines) >= 3  # at least one line before the end


async def test_clusters_wait_reports_the_error_and_unknown_clusters(
    admin: Api, eks_env: dict[str, str], eks_name: str, moto: MotoServer
) -> None:
    from workers.eks import eks_provision

    project = await admin.create_project()
    created = await admin.post(f"/api/v1/projects/{project['id']}/clusters/eks", eks_body(eks_name))
    cluster_id = created.json()["cluster_id"]
    admin.client.headers["Authorization"] = f"Bearer {admin.token}"
    provider_id = provider_of(cluster_id).id
    eks_provision(provider_id, 0)
    eks_provision(provider_id, 1)
    moto.set_stack_status(f"clusterport-cluster-{cluster_id}", "ROLLBACK_COMPLETE")
    eks_provision(provider_id, 2)

    out = io.StringIO()
    assert await wait_for_cluster(admin.client, cluster_id, out=out) == EXIT_ERRORED
    assert "error: ROLLBACK_COMPLETE" in out.getvalue()
    assert "failed" in out.getvalue()

    missing = io.StringIO()
    assert await wait_for_cluster(admin.client, 999999, out=missing) == EXIT_UNAVAILABLE
    assert "not_found" in missing.getvalue() or "404" in missing.getvalue()


def test_wait_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = argparse.ArgumentParser(prog="clusterport")
    clusters = parser.add_subparsers().add_parser("clusters").add_subparsers()
    add_wait_parser(clusters)

    args = parser.parse_args(["clusters", "wait", "7", "--interval", "0.5", "--timeout", "60"])

    assert (args.func, args.cluster_id, args.interval, args.timeout) == (
        cmd_clusters_wait,
        7,
        0.5,
        60.0,
    )
    monkeypatch.delenv("CLUSTERPORT_TOKEN", raising=False)
    # No token: one line that says so instead of calling the API (exit 2 through `main`).
    with pytest.raises(CLIError, match="CLUSTERPORT_TOKEN"):
        args.func(args)
    assert EXIT_UNAVAILABLE == 2
