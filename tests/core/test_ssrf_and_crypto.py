"""The SSRF guard's address rules, and secret encryption with key rotation."""

from __future__ import annotations

import ipaddress
import os

import pytest
from cryptography.fernet import Fernet

from app.core.ssrf import UnsafeURLError, is_public_address, resolve_target


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "100.127.255.254",
        "169.254.1.1",
        "0.0.0.0",
        "255.255.255.255",
        "224.0.0.5",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "::ffff:10.0.0.1",
        "64:ff9b::7f00:1",
        "2002:c0a8:101::",
        "2001:0:4136:e378:8000:63bf:f5ff:fffe",
        "ff0e::1",
        # Special-purpose blocks that `ipaddress.is_global` let through.
        "64:ff9b:1::1",
        "fec0::1",
        "192.0.0.1",
        "192.0.0.170",
        "192.0.0.9",
        "192.88.99.1",
        "3fff::1",
        "5f00::1",
        "2001:db8::1",
        "198.18.0.1",
        "192.31.196.1",
        "2620:4f:8000::1",
        "100::1",
        "240.0.0.1",
    ],
)
def test_non_public_addresses(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:4700::1111", "::ffff:93.184.216.34"])
def test_public_addresses(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))


def test_allow_local_network_permits_loopback_and_pins_the_address() -> None:
    target = resolve_target("https://127.0.0.1:6443/", allow_local=True)
    assert (target.host, target.port, target.address) == ("127.0.0.1", 6443, "127.0.0.1")
    with pytest.raises(UnsafeURLError):
        resolve_target("https://127.0.0.1:6443/", allow_local=False)


def test_port_zero_is_refused() -> None:
    with pytest.raises(UnsafeURLError) as caught:
        resolve_target("https://93.184.216.34:0/", allow_local=False)
    assert caught.value.code == "invalid_url"
    with pytest.raises(UnsafeURLError):
        resolve_target("https://127.0.0.1:0/", allow_local=True)


@pytest.mark.parametrize(
    "url",
    [
        "https://169.254.169.254/",
        "https://[fd00:ec2::254]/",
        "https://[::ffff:169.254.169.254]/",
        "https://169.254.170.2/",
    ],
)
def test_metadata_addresses_stay_blocked_when_local_networks_are_allowed(url: str) -> None:
    # Resolving a literal address dials nothing.
    with pytest.raises(UnsafeURLError) as caught:
        resolve_target(url, allow_local=True)
    assert caught.value.code == "unsafe_url"
    assert "metadata" in caught.value.message


def test_reencrypt_moves_secrets_to_the_first_key(settings: object) -> None:
    from pydantic import SecretStr
    from sqlalchemy import text

    from app.clusters.models import Cluster, KubernetesPlatform
    from app.core import crypto
    from app.core.db import session_scope
    from app.core.reencrypt import reencrypt_all
    from app.projects.models import Project

    old_key = os.environ["CLUSTERPORT_ENCRYPTION_KEYS"]
    with session_scope() as session:
        project = Project(name="p")
        session.add(project)
        session.flush()
        session.add(
            Cluster(
                project_id=project.id,
                name="c",
                platform=KubernetesPlatform(api_url="https://93.184.216.34", token="s3cret"),
            )
        )
    new_key = Fernet.generate_key().decode()
    original = settings.encryption_keys  # type: ignore[attr-defined]
    settings.encryption_keys = [SecretStr(new_key), SecretStr(old_key)]  # type: ignore[attr-defined]
    try:
        with session_scope() as session:
            assert reencrypt_all(session) == 1
        with session_scope() as session:
            raw = session.execute(text("SELECT token FROM kubernetes_platforms")).scalar_one()
        assert Fernet(new_key.encode()).decrypt(raw.encode()) == b"s3cret"
        settings.encryption_keys = [SecretStr(new_key)]  # type: ignore[attr-defined]
        assert crypto.decrypt_secret(raw) == "s3cret"
    finally:
        settings.encryption_keys = original  # type: ignore[attr-defined]
