"""The Kubernetes wrapper against a real kube-apiserver: groups, discovery and typed errors."""

from __future__ import annotations

import socket

import pytest

from app.core.ssrf import UnsafeURLError
from app.kube import KubeClient, KubeError
from tests.support.kubeapi import K8S_VERSION, KubeCluster, unique_name


def _error_code(excinfo: pytest.ExceptionInfo[KubeError]) -> str:
    return excinfo.value.code


def test_version(kube: KubeClient, kube_cluster: KubeCluster) -> None:
    version = kube.version()
    assert version.major == "1"
    if kube_cluster.source == "local":
        assert version.git_version == K8S_VERSION
    else:
        assert version.git_version.startswith("v1.")


def test_objects_across_groups(
    kube: KubeClient, kube_cluster: KubeCluster, scratch_namespace: str
) -> None:
    ns = scratch_namespace
    kube.core.create_namespaced_config_map(
        ns, {"metadata": {"name": "settings"}, "data": {"color": "blue"}}
    )
    kube.rbac.create_namespaced_role(
        ns,
        {
            "metadata": {"name": "reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
        },
    )
    kube.apps.create_namespaced_deployment(
        ns,
        {
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
                },
            },
        },
    )
    kube.networking.create_namespaced_network_policy(
        ns,
        {
            "metadata": {"name": "deny-all"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
        },
    )

    assert kube.core.read_namespaced_config_map("settings", ns).data == {"color": "blue"}
    assert kube.rbac.read_namespaced_role("reader", ns).rules[0].verbs == ["get", "list"]
    assert kube.apps.read_namespaced_deployment("web", ns).spec.replicas == 1
    assert [p.metadata.name for p in kube.networking.list_namespaced_network_policy(ns).items] == [
        "deny-all"
    ]
    # And kubectl, a client that is not ours, sees the same objects.
    assert kube_cluster.kubectl_json("get", "configmap", "settings", "-n", ns)["data"] == {
        "color": "blue"
    }
    assert kube_cluster.kubectl_json("get", "deployment", "web", "-n", ns)["spec"]["replicas"] == 1
    role = kube_cluster.kubectl_json("get", "role", "reader", "-n", ns)
    assert role["rules"][0]["resources"] == ["pods"]


def test_custom_resource_group(
    kube: KubeClient, kube_cluster: KubeCluster, scratch_namespace: str
) -> None:
    group = f"{unique_name('g')}.clusterport.test"
    crd_name = f"widgets.{group}"
    kube.apiextensions.create_custom_resource_definition(
        {
            "metadata": {"name": crd_name},
            "spec": {
                "group": group,
                "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "properties": {
                                    "spec": {
                                        "type": "object",
                                        "properties": {"size": {"type": "integer"}},
                                    }
                                },
                            }
                        },
                    }
                ],
            },
        }
    )
    try:
        kube_cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd_name}")
        assert f"{group}/v1" in kube.api_group_versions()
        assert {"name": "widgets", "kind": "Widget", "namespaced": True} in kube.api_resources(
            f"{group}/v1"
        )
        kube.custom_objects.create_namespaced_custom_object(
            group,
            "v1",
            scratch_namespace,
            "widgets",
            {
                "apiVersion": f"{group}/v1",
                "kind": "Widget",
                "metadata": {"name": "w1"},
                "spec": {"size": 3},
            },
        )
        got = kube_cluster.kubectl_json("get", f"widgets.{group}", "w1", "-n", scratch_namespace)
        assert got["spec"] == {"size": 3}
    finally:
        kube_cluster.kubectl("delete", "crd", crd_name, "--wait=false")


def test_core_discovery(kube: KubeClient) -> None:
    assert kube.api_group_versions()[0] == "v1"
    kinds = {r["kind"] for r in kube.api_resources("v1")}
    assert {"Namespace", "Pod", "Secret", "ServiceAccount"} <= kinds
    assert "rbac.authorization.k8s.io/v1" in kube.api_group_versions()


def test_missing_object_is_not_found(kube: KubeClient) -> None:
    with pytest.raises(KubeError) as excinfo:
        kube.core.read_namespace(unique_name("absent"))
    assert _error_code(excinfo) == "not_found"
    assert excinfo.value.status == 404


def test_existing_object_is_conflict(kube: KubeClient, scratch_namespace: str) -> None:
    with pytest.raises(KubeError) as excinfo:
        kube.core.create_namespace({"metadata": {"name": scratch_namespace}})
    assert _error_code(excinfo) == "conflict"


def test_invalid_object_is_invalid(kube: KubeClient) -> None:
    with pytest.raises(KubeError) as excinfo:
        kube.core.create_namespace({"metadata": {"name": "Not_A_DNS_Label"}})
    assert _error_code(excinfo) == "invalid"
    # Nothing of the cluster's answer is kept on the error or its cause.
    assert "Not_A_DNS_Label" not in str(excinfo.value)
    assert "Not_A_DNS_Label" not in str(excinfo.value.__cause__)


def test_wrong_ca_is_tls_error(kube_cluster: KubeCluster, test_ca_pem: str) -> None:
    # A CA of its own that did not sign the apiserver's certificate.
    with (
        KubeClient.from_platform(
            kube_cluster.url, test_ca_pem, kube_cluster.token, allow_local=True
        ) as client,
        pytest.raises(KubeError) as excinfo,
    ):
        client.version()
    assert _error_code(excinfo) == "tls_error"


def test_bad_token_is_unauthorized(kube_cluster: KubeCluster) -> None:
    with (
        KubeClient.from_platform(
            kube_cluster.url, kube_cluster.ca_pem, "not-a-valid-token", allow_local=True
        ) as client,
        pytest.raises(KubeError) as excinfo,
    ):
        client.core.list_namespace()
    assert _error_code(excinfo) == "unauthorized"
    assert excinfo.value.status == 401


def test_rbac_limited_token_is_forbidden(kube_cluster: KubeCluster, scratch_namespace: str) -> None:
    kube_cluster.kubectl("create", "serviceaccount", "nobody", "-n", scratch_namespace)
    token = kube_cluster.kubectl("create", "token", "nobody", "-n", scratch_namespace).stdout
    with KubeClient.from_platform(
        kube_cluster.url, kube_cluster.ca_pem, token.strip(), allow_local=True
    ) as client:
        # A valid identity (the /version endpoint is open to it) without RBAC rights.
        assert client.version().major == "1"
        with pytest.raises(KubeError) as excinfo:
            client.core.list_namespaced_secret(scratch_namespace)
    assert _error_code(excinfo) == "forbidden"
    assert excinfo.value.status == 403


def test_closed_port_is_unreachable(kube_cluster: KubeCluster) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Nothing listens on the port once the socket is closed.
    with (
        KubeClient.from_platform(
            f"https://127.0.0.1:{port}", kube_cluster.ca_pem, kube_cluster.token, allow_local=True
        ) as client,
        pytest.raises(KubeError) as excinfo,
    ):
        client.version()
    assert _error_code(excinfo) == "unreachable"
    assert excinfo.value.transient


@pytest.mark.parametrize(
    "url", ["https://127.0.0.1:6443", "https://localhost:6443", "https://[::1]:6443"]
)
def test_local_address_refused_unless_allowed(url: str, kube_cluster: KubeCluster) -> None:
    with pytest.raises(UnsafeURLError) as excinfo:
        KubeClient.from_platform(url, kube_cluster.ca_pem, kube_cluster.token, allow_local=False)
    assert excinfo.value.code == "unsafe_url"


def test_plain_http_refused(kube_cluster: KubeCluster) -> None:
    with pytest.raises(UnsafeURLError):
        KubeClient.from_platform(
            kube_cluster.url.replace("https://", "http://"),
            kube_cluster.ca_pem,
            kube_cluster.token,
            allow_local=True,
        )


def test_certificate_for_another_host_is_tls_error(kube_cluster: KubeCluster) -> None:
    # The right CA, but the apiserver's certificate names 127.0.0.1, not "localhost".
    url = kube_cluster.url.replace("127.0.0.1", "localhost")
    if url == kube_cluster.url:
        pytest.fail("this test needs the cluster on https://127.0.0.1 (the local control plane)")
    with (
        KubeClient.from_platform(
            url, kube_cluster.ca_pem, kube_cluster.token, allow_local=True
        ) as client,
        pytest.raises(KubeError) as excinfo,
    ):
        client.version()
    assert _error_code(excinfo) == "tls_error"
