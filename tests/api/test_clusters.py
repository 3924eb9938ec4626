"""Registering, listing, changing and deleting user-provided clusters."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests.conftest import Api

PUBLIC_URL = "https://93.184.216.34:6443"  # a public address; never dialled (no worker runs here)


def cluster_body(name: str = "prod", **kubernetes: Any) -> dict[str, Any]:
    return {
        "name": name,
        "environment_scope": kubernetes.pop("scope", "*"),
        "kubernetes": {"api_url": PUBLIC_URL, "token": "sa-token-secret", **kubernetes},
    }


async def test_create_list_get_update_delete(admin: Api, test_ca_pem: str) -> None:
    project = await admin.create_project()
    base = f"/api/v1/projects/{project['id']}/clusters"
    created = await admin.post(base, cluster_body(ca_pem=test_ca_pem))
    assert created.status_code == 201, created.text
    cluster = created.json()
    assert cluster["status"] == "connecting"
    assert cluster["kubernetes"]["api_url"] == PUBLIC_URL
    assert "sa-token-secret" not in created.text

    listed = (await admin.get(base)).json()
    assert [c["id"] for c in listed["items"]] == [cluster["id"]]
    # Lists name the CA by fingerprint (as openssl prints it); one cluster carries the PEM.
    certificate = x509.load_pem_x509_certificate(test_ca_pem.encode())
    fingerprint = certificate.fingerprint(hashes.SHA256()).hex(":").upper()
    assert "ca_pem" not in listed["items"][0]["kubernetes"]
    assert listed["items"][0]["kubernetes"]["ca_fingerprint"] == fingerprint
    one = (await admin.get(f"{base}/{cluster['id']}")).json()
    assert one["kubernetes"]["ca_pem"].startswith("-----BEGIN CERTIFICATE-----")
    assert one["kubernetes"]["ca_fingerprint"] == fingerprint

    patched = await admin.patch(f"{base}/{cluster['id']}", {"environment_scope": "production"})
    assert patched.status_code == 200
    assert patched.json()["environment_scope"] == "production"

    assert (await admin.delete(f"{base}/{cluster['id']}")).status_code == 204
    assert (await admin.get(f"{base}/{cluster['id']}")).status_code == 404


@pytest.mark.parametrize(
    "url",
    [
        "https://[::ffff:127.0.0.1]",
        "https://127.0.0.1:6443",
        "https://0x7f.1",
        "https://2130706433",
        "https://017700000001",
        "https://10.1.2.3",
        "https://172.16.0.1",
        "https://192.168.1.1",
        "https://100.64.0.1",
        "https://169.254.169.254",
        "https://[fe80::1]",
        "https://[::1]",
        "https://0.0.0.0",
        "https://255.255.255.255",
        "https://224.0.0.1",
        "https://[64:ff9b::a00:1]",
        "https://localhost",
    ],
)
async def test_unsafe_urls_are_refused(admin: Api, url: str) -> None:
    project = await admin.create_project()
    response = await admin.post(
        f"/api/v1/projects/{project['id']}/clusters", cluster_body(api_url=url)
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "unsafe_url"
    listed = (await admin.get(f"/api/v1/projects/{project['id']}/clusters")).json()
    assert listed["items"] == []


async def test_bad_input_is_a_clear_4xx(admin: Api) -> None:
    project = await admin.create_project()
    base = f"/api/v1/projects/{project['id']}/clusters"
    cases = [
        (cluster_body(name="Bad Name"), "validation_failed"),
        (cluster_body(ca_pem="not a certificate"), "validation_failed"),
        (cluster_body(api_url="http://93.184.216.34"), "invalid_url_scheme"),
        (cluster_body(api_url="https://user:pw@93.184.216.34"), "invalid_url"),
        (cluster_body(api_url="https://[bad"), "invalid_url"),
        (cluster_body(scope="review/**"), "validation_failed"),
        ({"name": "x"}, "validation_failed"),
    ]
    for body, code in cases:
        response = await admin.post(base, body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"]["code"] == code
        assert "sa-token-secret" not in response.text
    not_json = await admin.request(
        "POST", base, content=b"{", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 422
    assert (await admin.get(base)).json()["items"] == []


async def test_names_and_environment_scopes_are_unique(admin: Api) -> None:
    project = await admin.create_project()
    base = f"/api/v1/projects/{project['id']}/clusters"
    assert (await admin.post(base, cluster_body("prod", scope="production"))).status_code == 201
    same_name = await admin.post(base, cluster_body("prod", scope="staging"))
    assert same_name.status_code == 409
    assert same_name.json()["error"]["code"] == "cluster_name_taken"
    same_scope = await admin.post(base, cluster_body("other", scope="production"))
    assert same_scope.status_code == 409
    assert same_scope.json()["error"]["code"] == "environment_scope_taken"
    review = await admin.post(base, cluster_body("review", scope="review/*"))
    assert review.status_code == 201
    clash = await admin.patch(f"{base}/{review.json()['id']}", {"name": "prod"})
    assert clash.status_code == 409


async def test_cluster_token_is_encrypted_at_rest(admin: Api) -> None:
    from sqlalchemy import text

    from app.core.db import session_scope

    project = await admin.create_project()
    await admin.post(f"/api/v1/projects/{project['id']}/clusters", cluster_body())
    with session_scope() as session:
        stored = session.execute(text("SELECT token FROM kubernetes_platforms")).scalar_one()
    assert "sa-token-secret" not in stored
    assert stored.startswith("gAAAAA")  # a Fernet token


async def test_reporter_reads_but_cannot_change(admin: Api) -> None:
    project = await admin.create_project()
    base = f"/api/v1/projects/{project['id']}/clusters"
    reporter = admin.as_token(await admin.create_project_token(project["id"], "reporter"))
    assert (await reporter.post(base, cluster_body())).status_code == 403
    created = (await admin.post(base, cluster_body())).json()
    assert (await reporter.get(f"{base}/{created['id']}")).status_code == 200
    assert (await reporter.delete(f"{base}/{created['id']}")).status_code == 403
