"""Fixtures for GitOps tests: a loopback git server, an isolated git cache, API helpers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Api
from tests.kube.helpers import Project
from tests.support.git_server import GitServer, git_server
from tests.support.kubeapi import unique_name


@pytest.fixture
def git_repos(tmp_path: Path) -> Iterator[GitServer]:
    root = tmp_path / "served"
    root.mkdir()
    with git_server(root) as server:
        yield server


@pytest.fixture(autouse=True)
def gitops_cache(tmp_path: Path) -> Iterator[Path]:
    from app.gitops.settings import get_gitops_settings

    settings = get_gitops_settings()
    previous = settings.cache_dir
    settings.cache_dir = tmp_path / "git-cache"
    yield settings.cache_dir
    settings.cache_dir = previous


class GitOps:
    """A project with a source and helpers for its routes."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.api: Api = project.api
        self.base = f"{project.base}/gitops"

    async def source(self, url: str, **fields: Any) -> dict[str, Any]:
        body = {"name": fields.pop("name", unique_name("s")), "url": url, **fields}
        response = await self.api.post(f"{self.base}/sources", body)
        assert response.status_code == 201, response.text
        data: dict[str, Any] = response.json()
        return data

    async def environment(
        self, source_id: int, cluster_id: int, namespace: str, **fields: Any
    ) -> dict[str, Any]:
        body = {
            "name": fields.pop("name", unique_name("e")),
            "source_id": source_id,
            "cluster_id": cluster_id,
            "namespace": namespace,
            **fields,
        }
        response = await self.api.post(f"{self.base}/environments", body)
        assert response.status_code == 201, response.text
        data: dict[str, Any] = response.json()
        return data

    async def deployments(self, environment_id: int) -> list[dict[str, Any]]:
        response = await self.api.get(
            f"{self.base}/environments/{environment_id}/deployments", params={"limit": 100}
        )
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    async def deployment(self, deployment_id: int) -> dict[str, Any]:
        response = await self.api.get(f"{self.base}/deployments/{deployment_id}")
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    async def hook(self, source: dict[str, Any], headers: dict[str, str], body: bytes) -> Any:
        return await self.api.client.post(source["hook_path"], content=body, headers=headers)


@pytest.fixture
async def gitops(admin: Api) -> GitOps:
    return GitOps(await Project.create(admin))
