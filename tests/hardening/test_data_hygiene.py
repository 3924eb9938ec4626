"""Data hygiene: bounded cache rows, random encryption keys, a private embedded data dir."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy import func, select

from tests.conftest import Api


async def test_namespace_filters_cannot_grow_the_cache_without_bound(admin: Api) -> None:
    from app.cluster_state.models import ClusterResourceCache
    from app.cluster_state.service import MAX_NAMESPACED_ENTRIES
    from app.core.db import session_scope

    project = await admin.create_project("cache")
    created = await admin.post(
        f"/api/v1/projects/{project['id']}/clusters",
        # A literal public address: resolving it dials nothing, and no worker runs here.
        {"name": "c", "kubernetes": {"api_url": "https://93.184.216.34", "token": "t"}},
    )
    assert created.status_code == 201, created.text
    url = f"/api/v1/projects/{project['id']}/clusters/{created.json()['id']}/resources"
    for i in range(MAX_NAMESPACED_ENTRIES + 20):
        response = await admin.get(url, params={"kind": "pods", "namespace": f"ns-{i}"})
        assert response.status_code == 202, response.text
    all_namespaces = await admin.get(url, params={"kind": "pods"})
    assert all_namespaces.status_code == 202
    with session_scope() as session:
        rows = session.scalar(select(func.count()).select_from(ClusterResourceCache))
        newest = session.scalar(
            select(func.count())
            .select_from(ClusterResourceCache)
            .where(ClusterResourceCache.namespace == f"ns-{MAX_NAMESPACED_ENTRIES + 19}")
        )
    assert rows == MAX_NAMESPACED_ENTRIES + 1  # the newest namespaces plus the cluster-wide list
    assert newest == 1


def _key(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


@pytest.mark.parametrize(
    "key",
    [
        _key(bytes(32)),
        _key(b"\xff" * 32),
        _key(bytes(range(8)) * 4),
        _key(b"my-very-secret-encryption-key-01"),
    ],
)
def test_low_entropy_encryption_keys_are_refused(key: str) -> None:
    from app.core.crypto import EncryptionKeyError, validate_keys
    from app.core.settings import Settings

    Fernet(key)  # a well-formed key: only its randomness is wrong
    with pytest.raises(EncryptionKeyError, match="not random"):
        validate_keys(Settings(encryption_keys=[SecretStr(Fernet.generate_key().decode()), key]))


def test_generated_keys_are_accepted() -> None:
    from app.core.crypto import generate_key, validate_keys
    from app.core.settings import Settings

    validate_keys(Settings(encryption_keys=[SecretStr(generate_key()) for _ in range(200)]))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_embedded_data_dir_and_database_are_private(tmp_path: Path) -> None:
    """What `clusterport serve` prepares, also over a data dir an older version left open."""
    from app.core.crypto import ensure_embedded_key, private_data_dir

    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    database = data / "clusterport.db"
    database.touch()
    database.chmod(0o644)
    private_data_dir(data, database)
    ensure_embedded_key(data)
    assert _mode(data) == 0o700
    assert _mode(database) == 0o600
    assert _mode(data / "encryption.key") == 0o600

    fresh = tmp_path / "fresh" / "data"
    private_data_dir(fresh, fresh / "clusterport.db")
    assert (_mode(fresh), _mode(fresh / "clusterport.db")) == (0o700, 0o600)
