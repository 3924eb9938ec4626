"""Helpers for end-to-end tests: register the test cluster through the API, wait for workers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tests.conftest import Api
from tests.support.kubeapi import KubeCluster, unique_name

DEADLINE_SECONDS = 60


async def wait_for(
    fetch: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], what: str
) -> Any:
    """Poll `fetch` until `done(result)`, with a deadline (the work happens in a worker)."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        result = await fetch()
        if done(result):
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}; last: {result}"
        await asyncio.sleep(0.1)


def limited_token(kube_cluster: KubeCluster, *rules: str, name: str | None = None) -> str:
    """A token of a new service account (in `default`) bound to a ClusterRole made of `rules`,
    each given as `verbs:resources` (e.g. `get,list:namespaces`)."""
    name = name or unique_name("limited")
    kube_cluster.kubectl("create", "serviceaccount", name, "-n", "default")
    if rules:
        args = ["create", "clusterrole", name]
        for rule in rules:
            verbs, resources = rule.split(":")
            args += [f"--verb={verbs}", f"--resource={resources}"]
        kube_cluster.kubectl(*args)
        kube_cluster.kubectl(
            "create",
            "clusterrolebinding",
            name,
            f"--clusterrole={name}",
            f"--serviceaccount=default:{name}",
        )
    return kube_cluster.kubectl("create", "token", name, "-n", "default").stdout.strip()


class Project:
    """A project with the test cluster registered through the API."""

    def __init__(self, api: Api, data: dict[str, Any]) -> None:
        self.api = api
        self.id: int = data["id"]
        self.name: str = data["name"]
        self.base = f"/api/v1/projects/{self.id}"

    @classmethod
    async def create(cls, api: Api) -> Project:
        return cls(api, await api.create_project(unique_name("p")))

    async def add_cluster(
        self,
        kube_cluster: KubeCluster,
        *,
        token: str | None = None,
        ca_pem: str | None = None,
        url: str | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        body = {
            "name": fields.pop("name", unique_name("c")),
            **fields,
            "kubernetes": {
                "api_url": url or kube_cluster.url,
                "ca_pem": ca_pem or kube_cluster.ca_pem,
                "token": token or kube_cluster.token,
            },
        }
        response = await self.api.post(f"{self.base}/clusters", body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def cluster(self, cluster_id: int) -> dict[str, Any]:
        response = await self.api.get(f"{self.base}/clusters/{cluster_id}")
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    async def checked_cluster(self, cluster_id: int) -> dict[str, Any]:
        """The cluster once its connectivity check has run."""
        result: dict[str, Any] = await wait_for(
            lambda: self.cluster(cluster_id),
            lambda c: c["status"] != "connecting",
            "the connectivity check",
        )
        return result

    async def connected_cluster(self, kube_cluster: KubeCluster, **fields: Any) -> dict[str, Any]:
        created = await self.add_cluster(kube_cluster, **fields)
        cluster = await self.checked_cluster(created["id"])
        assert cluster["status"] == "connected", cluster
        return cluster
