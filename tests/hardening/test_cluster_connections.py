"""A cluster's stored token stays with the address and CA it was given for."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from tests.conftest import Api
from tests.eks.conftest import eks_body
from tests.support.certs import self_signed

PUBLIC = "https://93.184.216.34"  # a literal public address: resolving it dials nothing


def stored_token(cluster_id: int) -> str | None:
    from app.clusters.models import KubernetesPlatform
    from app.core.db import session_scope

    with session_scope() as session:
        token: str | None = session.scalar(
            select(KubernetesPlatform.token).where(KubernetesPlatform.cluster_id == cluster_id)
        )
    return token


async def _cluster(admin: Api, **kubernetes: Any) -> tuple[str, int]:
    project = await admin.create_project("conn")
    base = f"/api/v1/projects/{project['id']}/clusters"
    body = {"name": "c", "kubernetes": {"api_url": PUBLIC, "token": "first-token", **kubernetes}}
    created = await admin.post(base, body)
    assert created.status_code == 201, created.text
    return base, created.json()["id"]


async def test_changing_the_address_without_a_token_drops_the_stored_one(admin: Api) -> None:
    base, cid = await _cluster(admin)
    moved = await admin.patch(f"{base}/{cid}", {"kubernetes": {"api_url": "https://1.1.1.1"}})
    assert moved.status_code == 200, moved.text
    assert stored_token(cid) is None
    assert moved.json()["status"] == "unauthorized"
    assert moved.json()["error"]["code"] == "no_credentials"
    # A new token for the new address brings it back to a check.
    fixed = await admin.patch(f"{base}/{cid}", {"kubernetes": {"token": "second-token"}})
    assert fixed.json()["status"] == "connecting"
    assert stored_token(cid) == "second-token"


async def test_changing_the_ca_without_a_token_drops_the_stored_one(admin: Api) -> None:
    base, cid = await _cluster(admin)
    ca = self_signed("other-ca", loopback_san=False)[0]
    moved = await admin.patch(f"{base}/{cid}", {"kubernetes": {"ca_pem": ca}})
    assert moved.status_code == 200, moved.text
    assert stored_token(cid) is None


async def test_a_new_token_in_the_same_request_moves_with_the_address(admin: Api) -> None:
    base, cid = await _cluster(admin)
    body = {"kubernetes": {"api_url": "https://1.1.1.1", "token": "for-the-new-address"}}
    moved = await admin.patch(f"{base}/{cid}", body)
    assert moved.status_code == 200, moved.text
    assert moved.json()["status"] == "connecting"
    assert stored_token(cid) == "for-the-new-address"


async def test_unchanged_address_and_other_edits_keep_the_token(admin: Api) -> None:
    base, cid = await _cluster(admin)
    same = await admin.patch(
        f"{base}/{cid}", {"name": "renamed", "kubernetes": {"api_url": PUBLIC}}
    )
    assert same.status_code == 200, same.text
    assert stored_token(cid) == "first-token"


async def test_provisioned_clusters_refuse_connection_edits(admin: Api) -> None:
    from app.clusters.models import Cluster, KubernetesPlatform
    from app.core.db import session_scope

    project = await admin.create_project("eks")
    created = await admin.post(f"/api/v1/projects/{project['id']}/clusters/eks", eks_body("e"))
    assert created.status_code == 201, created.text
    cid = created.json()["cluster_id"]
    # As provisioning leaves it: the EKS endpoint and clusterport's cluster-admin token.
    with session_scope() as session:
        cluster = session.get(Cluster, cid)
        assert cluster is not None
        cluster.platform = KubernetesPlatform(api_url=PUBLIC, token="cluster-admin-token")
    base = f"/api/v1/projects/{project['id']}/clusters/{cid}"
    for change in ({"api_url": "https://1.1.1.1"}, {"ca_pem": None}, {"token": "mine"}):
        refused = await admin.patch(base, {"kubernetes": change})
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "not_user_cluster"
    assert stored_token(cid) == "cluster-admin-token"
