"""Cluster state summaries read from a real kube-apiserver."""

from __future__ import annotations

import json

from app.cluster_state.reader import read_resources
from app.cluster_state.schemas import ResourceKind
from app.kube import KubeClient
from tests.support.kubeapi import KubeCluster

DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web"},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
        },
    },
}
SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web"},
    "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]},
}


def test_summaries(kube: KubeClient, kube_cluster: KubeCluster, scratch_namespace: str) -> None:
    ns = scratch_namespace
    for obj in (DEPLOYMENT, SERVICE):
        kube_cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(obj))

    deployments, truncated = read_resources(kube, ResourceKind.deployments, ns)
    assert not truncated
    assert [(d["name"], d["namespace"], d["replicas"]) for d in deployments] == [("web", ns, 2)]

    services, _ = read_resources(kube, ResourceKind.services, ns)
    assert services[0]["type"] == "ClusterIP"
    assert services[0]["ports"] == [{"port": 80, "protocol": "TCP", "name": "http"}]
    assert services[0]["cluster_ip"]

    namespaces, _ = read_resources(kube, ResourceKind.namespaces, None)
    assert ns in {n["name"] for n in namespaces}
    assert {n["phase"] for n in namespaces if n["name"] == ns} == {"Active"}

    all_services, _ = read_resources(kube, ResourceKind.services, None)
    assert ("default", "kubernetes") in {(s["namespace"], s["name"]) for s in all_services}

    # Without a kubelet, the pods the ReplicaSet makes stay Pending and unbound.
    pods, _ = read_resources(kube, ResourceKind.pods, ns)
    for pod in pods:
        assert pod["name"].startswith("web-")
        assert pod["containers"] == 1
