"""Fixtures for tests of the Kubernetes wrapper: clients and scratch namespaces."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.kube import KubeClient
from tests.support.kubeapi import KubeCluster, unique_name


@pytest.fixture
def kube(kube_cluster: KubeCluster) -> Iterator[KubeClient]:
    """A wrapper client with the cluster's admin token."""
    with KubeClient.from_platform(
        kube_cluster.url, kube_cluster.ca_pem, kube_cluster.token, allow_local=True
    ) as client:
        yield client


@pytest.fixture
def scratch_namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    """A namespace of its own for one test, deleted afterwards."""
    name = unique_name("t")
    kube_cluster.kubectl("create", "namespace", name)
    yield name
    kube_cluster.kubectl("delete", "namespace", name, "--wait=false")
