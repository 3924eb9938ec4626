"""Project namespace objects in a real kube-apiserver: create, repair, conflict, rollback."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from app.kube import KubeClient, KubeError
from app.namespaces import provisioner
from app.namespaces.naming import (
    ROLE_BINDING,
    SERVICE_ACCOUNT,
    TOKEN_SECRET,
    environment_slug,
    namespace_name,
)
from app.namespaces.provisioner import NamespaceSpec
from tests.support.kubeapi import KubeCluster, unique_name


@pytest.fixture
def spec(kube_cluster: KubeCluster) -> Iterator[NamespaceSpec]:
    name = unique_name("proj")
    yield NamespaceSpec(
        namespace=name,
        project_id=7,
        cluster_id=3,
        environment="review/app-1",
        environment_slug=environment_slug("review/app-1"),
    )
    kube_cluster.kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=false")


def ensure_until_token(kube: KubeClient, spec: NamespaceSpec) -> str:
    """The token controller fills the Secret shortly after it is created."""
    deadline = time.monotonic() + 60
    while True:
        token = provisioner.ensure(kube, spec)
        if token is not None:
            return token
        assert time.monotonic() < deadline, "the token Secret was never filled"
        time.sleep(0.5)


def can_i(kube_cluster: KubeCluster, token: str, *args: str) -> str:
    """`kubectl auth can-i` as the holder of `token`."""
    ca_file = kube_cluster.kubeconfig.parent / "cluster-ca.crt"
    ca_file.write_text(kube_cluster.ca_pem)
    proc = kube_cluster.kubectl(
        *("--kubeconfig", "/dev/null", "--server", kube_cluster.url, "--token", token),
        *("--certificate-authority", str(ca_file), "auth", "can-i", *args),
        check=False,
    )
    return proc.stdout.strip()


def test_names() -> None:
    assert environment_slug("production") == "production"
    slug = environment_slug("review/app-1")
    assert slug.startswith("review-app-1-") and len(slug) == len("review-app-1-") + 6
    assert environment_slug("review-app-1") != slug
    assert len(environment_slug("x" * 200)) <= 24
    name = namespace_name(None, "My Project", 42, "production")
    assert name == "my-project-42-production"
    assert len(namespace_name("p" * 40, "x", 1, "e" * 255)) <= 63


def test_creates_namespace_objects(
    kube: KubeClient, kube_cluster: KubeCluster, spec: NamespaceSpec
) -> None:
    token = ensure_until_token(kube, spec)

    ns = kube_cluster.kubectl_json("get", "namespace", spec.namespace)
    assert ns["metadata"]["labels"]["clusterport.io/project-id"] == "7"
    assert ns["metadata"]["labels"]["clusterport.io/environment"] == spec.environment_slug
    assert ns["metadata"]["annotations"]["clusterport.io/environment-name"] == "review/app-1"
    kube_cluster.kubectl("get", "serviceaccount", SERVICE_ACCOUNT, "-n", spec.namespace)
    binding = kube_cluster.kubectl_json("get", "rolebinding", ROLE_BINDING, "-n", spec.namespace)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "admin",
    }
    secret = kube_cluster.kubectl_json("get", "secret", TOKEN_SECRET, "-n", spec.namespace)
    assert secret["type"] == "kubernetes.io/service-account-token"
    # The token is the service account's: it may manage its namespace and nothing else.
    assert can_i(kube_cluster, token, "create", "deployments", "-n", spec.namespace) == "yes"
    assert can_i(kube_cluster, token, "list", "secrets", "-n", "kube-system") == "no"


def test_namespaces_enforce_pod_security(
    kube: KubeClient, kube_cluster: KubeCluster, spec: NamespaceSpec
) -> None:
    ensure_until_token(kube, spec)
    labels = kube_cluster.kubectl_json("get", "namespace", spec.namespace)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["pod-security.kubernetes.io/enforce-version"] == "latest"
    privileged = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "escape", "namespace": spec.namespace},
        "spec": {
            "hostPID": True,
            "containers": [
                {"name": "c", "image": "busybox", "securityContext": {"privileged": True}}
            ],
        },
    }
    refused = kube_cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=json.dumps(privileged), check=False
    )
    assert refused.returncode != 0
    assert "violates PodSecurity" in refused.stderr
    # A drifted label is put back on the next run; the level is configurable.
    kube_cluster.kubectl(
        "label",
        "namespace",
        spec.namespace,
        "pod-security.kubernetes.io/enforce=privileged",
        "--overwrite",
    )
    ensure_until_token(kube, spec)
    labels = kube_cluster.kubectl_json("get", "namespace", spec.namespace)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    baseline = NamespaceSpec(**{**spec.__dict__, "pod_security": "baseline"})
    ensure_until_token(kube, baseline)
    labels = kube_cluster.kubectl_json("get", "namespace", spec.namespace)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/warn"] == "baseline"


def test_second_run_repairs_drift(
    kube: KubeClient, kube_cluster: KubeCluster, spec: NamespaceSpec
) -> None:
    first = ensure_until_token(kube, spec)
    kube_cluster.kubectl("delete", "rolebinding", ROLE_BINDING, "-n", spec.namespace)
    kube_cluster.kubectl("delete", "serviceaccount", SERVICE_ACCOUNT, "-n", spec.namespace)
    kube_cluster.kubectl(
        "label", "namespace", spec.namespace, "clusterport.io/environment=tampered", "--overwrite"
    )

    repaired = ensure_until_token(kube, spec)

    ns = kube_cluster.kubectl_json("get", "namespace", spec.namespace)
    assert ns["metadata"]["labels"]["clusterport.io/environment"] == spec.environment_slug
    kube_cluster.kubectl("get", "serviceaccount", SERVICE_ACCOUNT, "-n", spec.namespace)
    kube_cluster.kubectl("get", "rolebinding", ROLE_BINDING, "-n", spec.namespace)
    # The old token belonged to the deleted account; the new one works for the new account.
    assert repaired != first
    assert can_i(kube_cluster, repaired, "create", "deployments", "-n", spec.namespace) == "yes"


def test_changed_cluster_role_rebinds(
    kube: KubeClient, kube_cluster: KubeCluster, spec: NamespaceSpec
) -> None:
    ensure_until_token(kube, spec)
    edit = NamespaceSpec(**{**spec.__dict__, "cluster_role": "edit"})
    provisioner.ensure(kube, edit)
    binding = kube_cluster.kubectl_json("get", "rolebinding", ROLE_BINDING, "-n", spec.namespace)
    assert binding["roleRef"]["name"] == "edit"


def test_foreign_namespace_is_a_conflict_and_untouched(
    kube: KubeClient, kube_cluster: KubeCluster, spec: NamespaceSpec
) -> None:
    kube_cluster.kubectl("create", "namespace", spec.namespace)
    kube_cluster.kubectl("label", "namespace", spec.namespace, "team=payments")

    with pytest.raises(KubeError) as excinfo:
        provisioner.ensure(kube, spec)

    assert excinfo.value.code == "conflict"
    ns = kube_cluster.kubectl_json("get", "namespace", spec.namespace)
    assert "clusterport.io/project-id" not in ns["metadata"]["labels"]
    assert ns["metadata"].get("deletionTimestamp") is None
    sas = kube_cluster.kubectl_json("get", "serviceaccounts", "-n", spec.namespace)
    assert SERVICE_ACCOUNT not in [sa["metadata"]["name"] for sa in sas["items"]]
    # Removing our record never deletes a namespace that is not ours.
    assert provisioner.remove(kube, spec) is False
    assert kube_cluster.namespace_state(spec.namespace) == "active"


def test_failure_halfway_leaves_nothing(kube_cluster: KubeCluster, spec: NamespaceSpec) -> None:
    # A token that may create namespaces and service accounts but not Secrets or RoleBindings.
    sa_ns = unique_name("limited")
    role = unique_name("half")
    kube_cluster.kubectl("create", "namespace", sa_ns)
    try:
        kube_cluster.kubectl("create", "serviceaccount", "half", "-n", sa_ns)
        kube_cluster.kubectl(
            "create",
            "clusterrole",
            role,
            "--verb=get,list,create,patch,delete",
            "--resource=namespaces,serviceaccounts",
        )
        kube_cluster.kubectl(
            "create",
            "clusterrolebinding",
            role,
            f"--clusterrole={role}",
            f"--serviceaccount={sa_ns}:half",
        )
        token = kube_cluster.kubectl("create", "token", "half", "-n", sa_ns).stdout.strip()
        with (
            KubeClient.from_platform(
                kube_cluster.url, kube_cluster.ca_pem, token, allow_local=True
            ) as limited,
            pytest.raises(KubeError) as excinfo,
        ):
            provisioner.ensure(limited, spec)
        assert excinfo.value.code == "forbidden"
        # The namespace it had created is being deleted again (or is gone already).
        assert kube_cluster.namespace_state(spec.namespace) != "active"
    finally:
        kube_cluster.kubectl("delete", "namespace", sa_ns, "--wait=false")
        kube_cluster.kubectl("delete", "clusterrole", role, check=False)
        kube_cluster.kubectl("delete", "clusterrolebinding", role, check=False)


def test_remove_deletes_our_namespace(
    kube: KubeClient, kube_cluster: KubeCluster, spec: NamespaceSpec
) -> None:
    provisioner.ensure(kube, spec)
    assert provisioner.remove(kube, spec) is True
    assert kube_cluster.namespace_state(spec.namespace) != "active"
    # Removing again is a no-op.
    assert provisioner.remove(kube, spec) is True
