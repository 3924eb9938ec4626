"""Fixtures for GitOps tests: a loopback git server, an isolated git cache, API helpers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Api
from tests.gitops.webhooks import github_push, gitlab_push
from tests.kube.helpers import Project, Reach, wait_for
from tests.support.git_server import GitServer, WorkingCopy, git_server
from tests.support.kubeapi import KubeCluster, unique_name


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


SECRET = "a-webhook-secret-0123456789"
FINISHED = {"succeeded", "failed", "timed_out", "awaiting_confirmation"}


def config_map(name: str, value: str = "v", namespace: str | None = None) -> str:
    ns = f"\n  namespace: {namespace}" if namespace else ""
    return (
        f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}{ns}\ndata:\n  key: '{value}'\n"
    )


def service(name: str) -> str:
    return (
        f"apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n"
        "  selector: {app: web}\n  ports: [{port: 80}]\n"
    )


class Setup:
    def __init__(
        self,
        gitops: GitOps,
        repo: WorkingCopy,
        source: dict[str, Any],
        env: dict[str, Any],
        namespace: str,
    ) -> None:
        self.gitops, self.repo, self.source, self.env, self.namespace = (
            gitops,
            repo,
            source,
            env,
            namespace,
        )

    async def push(self, *, via: str = "github") -> tuple[str, dict[str, Any]]:
        sha = self.repo.commit_and_push()
        headers, body = (
            github_push(SECRET, "refs/heads/main", sha)
            if via == "github"
            else gitlab_push(SECRET, "refs/heads/main", sha)
        )
        response = await self.gitops.hook(self.source, headers, body)
        assert response.status_code == 202, response.text
        return sha, response.json()

    async def finished(self, commit: str) -> dict[str, Any]:
        """The deployment of `commit`, once finished, with its objects."""

        async def latest() -> dict[str, Any] | None:
            for item in reversed(await self.gitops.deployments(self.env["id"])):
                if item["commit_sha"] == commit and item["status"] in FINISHED:
                    return await self.gitops.deployment(item["id"])
            return None

        result: dict[str, Any] = await wait_for(latest, lambda d: d is not None, f"deploy {commit}")
        return result


@pytest.fixture
async def setup(
    gitops: GitOps, git_repos: GitServer, kube_cluster: KubeCluster, tmp_path: Path
) -> Setup:
    return await _setup(gitops, git_repos, kube_cluster, tmp_path)


@pytest.fixture
async def reached_setup(
    gitops: GitOps,
    git_repos: GitServer,
    kube_cluster: KubeCluster,
    tmp_path: Path,
    reach: Reach,
) -> Setup:
    """`setup`, with the cluster reached as `reach` says (directly, or through a real agent
    server and agent)."""
    gitops.project.reach = reach
    return await _setup(gitops, git_repos, kube_cluster, tmp_path)


async def _setup(
    gitops: GitOps, git_repos: GitServer, kube_cluster: KubeCluster, tmp_path: Path
) -> Setup:
    namespace = unique_name("gitops")
    kube_cluster.kubectl("create", "namespace", namespace)
    cluster = await gitops.project.connected_cluster(kube_cluster)
    repo = git_repos.create(unique_name("app"), tmp_path)
    source = await gitops.source(
        git_repos.url_of(repo.path.name), webhook_secret=SECRET, paths=["k8s"]
    )
    env = await gitops.environment(source["id"], cluster["id"], namespace, max_prune_share=0.9)
    return Setup(gitops, repo, source, env, namespace)
