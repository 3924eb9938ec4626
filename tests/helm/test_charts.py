"""The Helm charts against a real kube-apiserver: lint, render, server-side dry-run, and the
properties the charts promise (non-root, read-only root, probes, hooks, HPA, RBAC scope)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from tests.support.kubeapi import KubeCluster, tools_bin_dir, unique_name

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_CHART = REPO_ROOT / "helm" / "clusterport"
AGENT_CHART = REPO_ROOT / "helm" / "clusterport-agent"
HELM_CHECK = REPO_ROOT / "scripts" / "helm-check"

Obj = dict[str, Any]

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def helm() -> str:
    path = tools_bin_dir() / "helm"
    if not path.is_file():
        pytest.fail(
            f"helm not found at {path}: run scripts/kube-tools, which builds it from the Go "
            "module proxy (go install helm.sh/helm/v3/cmd/helm) next to kube-apiserver",
            pytrace=False,
        )
    return str(path)


@pytest.fixture(scope="module")
def namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    name = unique_name("helm-test")
    kube_cluster.kubectl("create", "namespace", name)
    yield name
    kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def render(helm: str, chart: Path, namespace: str, *args: str) -> str:
    proc = subprocess.run(
        [helm, "template", "rel", str(chart), "--namespace", namespace, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def dry_run(kube: KubeCluster, manifest: str) -> list[Obj]:
    """The objects as the API server would store them (defaults applied), nothing persisted."""
    proc = kube.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-o", "json", "-f", "-", input=manifest
    )
    out: Obj = json.loads(proc.stdout)
    items: list[Obj] = out["items"] if out.get("kind") == "List" else [out]
    return items


def by_kind(objects: list[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def ci_values(chart: Path, name: str) -> str:
    return str(chart / "ci" / f"{name}-values.yaml")


def test_helm_check_script_passes_on_the_cluster(kube_cluster: KubeCluster, helm: str) -> None:
    env = {
        **os.environ,
        "KUBECONFIG": str(kube_cluster.kubeconfig),
        "KUBECTL": kube_cluster.kubectl_path,
        "HELM": helm,
    }
    proc = subprocess.run(
        [str(HELM_CHECK)], env=env, capture_output=True, text=True, timeout=280, check=False
    )
    assert proc.returncode == 0, proc.stderr
    cases = sorted((SERVER_CHART / "ci").glob("*-values.yaml")) + sorted(
        (AGENT_CHART / "ci").glob("*-values.yaml")
    )
    for values in cases:
        case = f"{values.parent.parent.name}/{values.name.removesuffix('-values.yaml')}"
        assert f"ok   {case}:" in proc.stderr, proc.stderr
    assert ", 0 failed," in proc.stderr


@pytest.mark.parametrize(
    ("chart", "message"),
    [
        (SERVER_CHART, "database.url is required"),
        (AGENT_CHART, "serverUrl is required"),
    ],
)
def test_missing_required_values_fail_with_a_clear_message(
    helm: str, chart: Path, message: str
) -> None:
    proc = subprocess.run(
        [helm, "template", "rel", str(chart)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0
    assert message in proc.stderr


@pytest.mark.parametrize(
    ("chart", "setting", "message"),
    [
        (SERVER_CHART, "ingres.api.enabled=true", "additional properties 'ingres' not allowed"),
        (SERVER_CHART, "broker.url=redis://cache:6379", "broker"),
        (AGENT_CHART, "serverUrl=https://agent.example.com", "serverUrl"),
    ],
)
def test_values_schema_rejects_mistakes(helm: str, chart: Path, setting: str, message: str) -> None:
    proc = subprocess.run(
        [helm, "template", "rel", str(chart), "-f", ci_values(chart, "default"), "--set", setting],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "schema" in proc.stderr and message in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["rbac.namespaces={apps,agents}"], "must not list the release namespace"),
        (["serverUrl=ws://agent.example.com"], "insecure=true"),
    ],
)
def test_agent_chart_refuses_unsafe_settings(helm: str, settings: list[str], message: str) -> None:
    args = ["-f", ci_values(AGENT_CHART, "default")]
    args += [a for setting in settings for a in ("--set", setting)]
    proc = subprocess.run(
        [helm, "template", "rel", str(AGENT_CHART), "--namespace", "agents", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


def test_agent_chart_plain_ws_needs_the_insecure_flag(helm: str) -> None:
    manifest = render(
        helm,
        AGENT_CHART,
        "agents",
        "-f",
        ci_values(AGENT_CHART, "default"),
        "--set",
        "serverUrl=ws://agent.example.com,insecure=true",
    )
    assert "CLUSTERPORT_AGENT_ALLOW_INSECURE" in manifest
    default = render(helm, AGENT_CHART, "agents", "-f", ci_values(AGENT_CHART, "default"))
    assert "CLUSTERPORT_AGENT_ALLOW_INSECURE" not in default


def test_agent_chart_requires_a_token(helm: str) -> None:
    proc = subprocess.run(
        [helm, "template", "rel", str(AGENT_CHART), "--set", "serverUrl=wss://agent.example.com"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "token is required" in proc.stderr


def test_server_chart_defaults(kube_cluster: KubeCluster, helm: str, namespace: str) -> None:
    objects = dry_run(
        kube_cluster,
        render(helm, SERVER_CHART, namespace, "-f", ci_values(SERVER_CHART, "default")),
    )
    deployments = by_kind(objects, "Deployment")
    assert set(deployments) == {
        "rel-clusterport-api",
        "rel-clusterport-agent-server",
        "rel-clusterport-worker",
    }
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["automountServiceAccountToken"] is False, name
        (container,) = pod["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
        health = {p["name"]: p["containerPort"] for p in container["ports"]}["health"]
        assert health == 8151
        assert container["livenessProbe"]["httpGet"] == {
            "path": "/liveness",
            "port": "health",
            "scheme": "HTTP",
        }
        assert container["readinessProbe"]["httpGet"]["path"] == "/readiness"
        env = {e["name"]: e for e in container["env"]}
        assert env["CLUSTERPORT_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == (
            "rel-clusterport"
        )
        assert env["CLUSTERPORT_BIND_HOST"]["value"] == "0.0.0.0"
        # With autoscaling on, the HPA owns the replica count, not the Deployment.
        if name != "rel-clusterport-worker":
            assert "replicas" not in deployment["spec"] or deployment["spec"]["replicas"] == 1
    assert deployments["rel-clusterport-worker"]["spec"]["replicas"] == 2

    # Agent server: websocket and Kubernetes API proxy ports; each replica advertises its own
    # pod address so the others can route proxied requests to it.
    agent_pod = deployments["rel-clusterport-agent-server"]["spec"]["template"]["spec"]
    (agent_container,) = agent_pod["containers"]
    assert {p["name"]: p["containerPort"] for p in agent_container["ports"]} == {
        "agent": 8150,
        "proxy": 8154,
        "health": 8151,
    }
    agent_env = {e["name"]: e for e in agent_container["env"]}
    assert agent_env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert agent_env["CLUSTERPORT_AGENT_ADVERTISE_URL"]["value"] == "http://$(POD_IP):8154"
    service = by_kind(objects, "Service")["rel-clusterport-agent-server"]
    assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]} == {
        "agent": "agent",
        "proxy": "proxy",
        "health": "health",
    }

    hpas = by_kind(objects, "HorizontalPodAutoscaler")
    (agent_metric,) = hpas["rel-clusterport-agent-server"]["spec"]["metrics"]
    assert agent_metric["resource"] == {
        "name": "cpu",
        "target": {"type": "AverageValue", "averageValue": "100m"},
    }
    assert "rel-clusterport-api" in hpas
    assert set(by_kind(objects, "PodDisruptionBudget")) == set(deployments)

    secret = by_kind(objects, "Secret")["rel-clusterport"]
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert set(secret["data"]) == {"database-url", "broker-url", "encryption-keys"}

    job = by_kind(objects, "Job")["rel-clusterport-migrate"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    assert migrate["args"] == ["migrate"]
    # The Job runs before the release's Secret exists: it reads a hook Secret made just before.
    hook_secret = by_kind(objects, "Secret")["rel-clusterport-migrate"]
    assert int(hook_secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < 0
    assert hook_secret["data"] == {
        "database-url": secret["data"]["database-url"],
        "encryption-keys": secret["data"]["encryption-keys"],
    }
    migrate_env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in migrate["env"][:2]}
    assert migrate_env == {
        "CLUSTERPORT_DATABASE_URL": {"name": "rel-clusterport-migrate", "key": "database-url"},
        "CLUSTERPORT_ENCRYPTION_KEYS": {
            "name": "rel-clusterport-migrate",
            "key": "encryption-keys",
        },
    }

    assert not by_kind(objects, "Ingress")
    assert not by_kind(objects, "ServiceMonitor")


def test_server_chart_generates_a_valid_fernet_key(helm: str, namespace: str) -> None:
    manifest = render(helm, SERVER_CHART, namespace, "-f", ci_values(SERVER_CHART, "default"))
    docs = [d for d in manifest.split("\n---\n") if "name: rel-clusterport\n" in d]
    (secret,) = [d for d in docs if "kind: Secret" in d]
    (line,) = [ln for ln in secret.splitlines() if ln.strip().startswith("encryption-keys:")]
    key = base64.b64decode(line.split(":", 1)[1].strip().strip('"'))
    fernet = Fernet(key)  # raises unless it is 32 bytes of URL-safe base64
    assert fernet.decrypt(fernet.encrypt(b"token")) == b"token"


def test_server_chart_non_default(kube_cluster: KubeCluster, helm: str, namespace: str) -> None:
    objects = dry_run(
        kube_cluster, render(helm, SERVER_CHART, namespace, "-f", ci_values(SERVER_CHART, "full"))
    )
    assert not by_kind(objects, "Secret"), "an existing Secret means the chart makes none"
    job = by_kind(objects, "Job")["cp-migrate"]
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    assert migrate["env"][0]["valueFrom"]["secretKeyRef"] == {
        "name": "clusterport-credentials",
        "key": "DATABASE_URL",
    }
    ingresses = by_kind(objects, "Ingress")
    agent = ingresses["cp-agent-server"]
    assert agent["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"] == (
        "3600"
    )
    routes = {
        path["path"]: path["backend"]["service"]
        for path in agent["spec"]["rules"][0]["http"]["paths"]
    }
    assert routes == {
        "/": {"name": "cp-agent-server", "port": {"name": "agent"}},
        "/k8s-proxy/": {"name": "cp-agent-server", "port": {"name": "proxy"}},
    }
    assert ingresses["cp-api"]["spec"]["tls"][0]["secretName"] == "clusterport-api-tls"
    (monitor,) = by_kind(objects, "ServiceMonitor").values()
    assert monitor["spec"]["endpoints"][0]["port"] == "health"
    assert by_kind(objects, "Deployment")["cp-api"]["spec"]["replicas"] == 3
    assert set(by_kind(objects, "HorizontalPodAutoscaler")) == {"cp-agent-server"}
    assert by_kind(objects, "PodDisruptionBudget")["cp-api"]["spec"]["minAvailable"] == 2


def test_dry_run_rejects_an_invalid_object(
    kube_cluster: KubeCluster, helm: str, namespace: str
) -> None:
    manifest = render(
        helm,
        SERVER_CHART,
        namespace,
        "-f",
        ci_values(SERVER_CHART, "default"),
        "--set",
        "agentServer.autoscaling.cpu.averageValue=a-lot",
    )
    proc = kube_cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=manifest, check=False)
    assert proc.returncode != 0
    assert "HorizontalPodAutoscaler" in proc.stderr or "averageValue" in proc.stderr


def test_agent_chart_grants_nothing_in_its_own_namespace_by_default(
    kube_cluster: KubeCluster, helm: str, namespace: str
) -> None:
    objects = dry_run(
        kube_cluster,
        render(helm, AGENT_CHART, namespace, "-f", ci_values(AGENT_CHART, "default")),
    )
    # The release namespace holds the agent's token Secret and Deployment: no rights there.
    for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
        assert not by_kind(objects, kind), kind
    deployment = by_kind(objects, "Deployment")["rel-clusterport-agent"]
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "rel-clusterport-agent"
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["CLUSTERPORT_AGENT_SERVER_URL"] == "wss://agent.clusterport.example.com"
    assert "CLUSTERPORT_AGENT_TOKEN" not in env, "the token goes in a file, not the environment"
    token_file = Path(env["CLUSTERPORT_AGENT_TOKEN_FILE"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["token"] == str(token_file.parent)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["livenessProbe"]["httpGet"]["port"] == "health"
    assert container["resources"]["requests"]["cpu"] == "50m"


def test_agent_chart_cluster_wide_opt_in(
    kube_cluster: KubeCluster, helm: str, namespace: str
) -> None:
    objects = dry_run(
        kube_cluster,
        render(helm, AGENT_CHART, namespace, "-f", ci_values(AGENT_CHART, "cluster-wide")),
    )
    assert not by_kind(objects, "Role") and not by_kind(objects, "Secret")
    role = by_kind(objects, "ClusterRole")["agent"]
    assert any("namespaces" in rule["resources"] for rule in role["rules"])
    binding = by_kind(objects, "ClusterRoleBinding")["agent"]
    assert binding["roleRef"]["name"] == "agent"
    volume = by_kind(objects, "Deployment")["agent"]["spec"]["template"]["spec"]["volumes"][0]
    assert volume["secret"]["secretName"] == "agent-token"
    assert volume["secret"]["items"] == [{"key": "agent-token", "path": "token"}]


def test_generated_encryption_key_survives_upgrade_and_uninstall(
    kube_cluster: KubeCluster, helm: str, namespace: str
) -> None:
    """A real release: the key generated at install is reused on upgrade and kept on uninstall.

    Hooks are off because the cluster has no kubelet to run the migration Job.
    """

    def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [helm, "--kubeconfig", str(kube_cluster.kubeconfig), "--namespace", namespace, *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        return proc

    def stored_key() -> str:
        secret = kube_cluster.kubectl_json("-n", namespace, "get", "secret", "keep-clusterport")
        return base64.b64decode(secret["data"]["encryption-keys"]).decode()

    values = ci_values(SERVER_CHART, "default")
    run_helm("install", "keep", str(SERVER_CHART), "-f", values, "--no-hooks")
    installed = stored_key()
    Fernet(installed.encode())

    upgrade = run_helm(
        "upgrade", "keep", str(SERVER_CHART), "-f", values, "--no-hooks", "--dry-run=server"
    )
    assert base64.b64encode(installed.encode()).decode() in upgrade.stdout
    run_helm("upgrade", "keep", str(SERVER_CHART), "-f", values, "--no-hooks")
    assert stored_key() == installed

    run_helm("uninstall", "keep")
    assert stored_key() == installed, "the Secret with the key outlives the release"
    assert kube_cluster.kubectl("-n", namespace, "get", "deployments", "-o", "name").stdout == ""


def test_agent_chart_binds_a_cluster_role_per_namespace(
    kube_cluster: KubeCluster, helm: str, namespace: str
) -> None:
    others = [unique_name("helm-test-apps"), unique_name("helm-test-apps")]
    for other in others:
        kube_cluster.kubectl("create", "namespace", other)
    try:
        manifest = render(
            helm,
            AGENT_CHART,
            namespace,
            "-f",
            ci_values(AGENT_CHART, "namespaces"),
            "--set",
            f"rbac.namespaces={{{others[0]},{others[1]}}}",
        )
        objects = dry_run(kube_cluster, manifest)
    finally:
        for other in others:
            kube_cluster.kubectl("delete", "namespace", other, "--wait=false", check=False)
    assert not by_kind(objects, "Role") and not by_kind(objects, "ClusterRoleBinding")
    bindings = [o for o in objects if o["kind"] == "RoleBinding"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == sorted(others)
    for binding in bindings:
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "edit",
        }


def test_agent_service_account_gets_only_what_the_chart_grants(
    kube_cluster: KubeCluster, helm: str, namespace: str
) -> None:
    """Install the agent chart for real and ask the API server what its account may do."""
    other = unique_name("helm-test-other")
    kube_cluster.kubectl("create", "namespace", other)
    release = unique_name("rbac")  # cluster-scoped names stay unique on a shared cluster
    account = f"system:serviceaccount:{namespace}:{release}-clusterport-agent"

    def can(verb: str, resource: str, ns: str | None = None) -> bool:
        scope = ["-n", ns] if ns else ["--all-namespaces"]
        proc = kube_cluster.kubectl(
            "auth", "can-i", verb, resource, "--as", account, *scope, check=False
        )
        answer = proc.stdout.strip()
        assert answer in {"yes", "no"}, proc.stderr
        return answer == "yes"

    def helm_run(*args: str) -> None:
        proc = subprocess.run(
            [helm, "--kubeconfig", str(kube_cluster.kubeconfig), "--namespace", namespace, *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr

    values = ci_values(AGENT_CHART, "default")
    workloads = unique_name("helm-test-apps")
    kube_cluster.kubectl("create", "namespace", workloads)
    try:
        helm_run("install", release, str(AGENT_CHART), "-f", values)
        # Defaults: nothing at all, least of all its own token and Deployment.
        assert not can("get", "secrets", namespace)
        assert not can("patch", "deployments.apps", namespace)
        assert not can("create", "deployments.apps", other)

        helm_run(
            "upgrade",
            release,
            str(AGENT_CHART),
            "-f",
            values,
            "--set",
            f"rbac.namespaces={{{workloads}}}",
        )
        assert can("create", "deployments.apps", workloads)
        assert can("patch", "configmaps", workloads)
        assert can("get", "pods/log", workloads)
        assert not can("delete", "pods", workloads)
        assert not can("create", "rolebindings.rbac.authorization.k8s.io", workloads)
        # Proxy users act as the agent: its token Secret and its Deployment stay out of reach.
        for verb, resource in (
            ("get", "secrets"),
            ("list", "secrets"),
            ("patch", "deployments.apps"),
            ("update", "deployments.apps"),
            ("create", "pods"),
            ("create", "jobs.batch"),
        ):
            assert not can(verb, resource, namespace), (verb, resource)
        assert not can("create", "deployments.apps", other)
        assert not can("list", "secrets", other)
        assert not can("list", "namespaces")
        assert not can("create", "clusterroles.rbac.authorization.k8s.io")
        assert not can("impersonate", "serviceaccounts/clusterport-deployer", namespace)

        helm_run(
            "upgrade", release, str(AGENT_CHART), "-f", values, "--set", "rbac.clusterWide=true"
        )
        assert can("create", "deployments.apps", other)
        assert can("list", "namespaces")
        assert not can("create", "clusterroles.rbac.authorization.k8s.io")
        assert not can("delete", "namespaces")
        # Namespace kubeconfigs through the agent act as clusterport's namespace account only.
        assert can("impersonate", "serviceaccounts/clusterport-deployer", other)
        assert not can("impersonate", "serviceaccounts/default", other)
        assert not can("impersonate", "users")
        assert not can("impersonate", "groups")

        # Proxy access as the caller's clusterport identity: exact group names only.
        helm_run(
            "upgrade",
            release,
            str(AGENT_CHART),
            "-f",
            values,
            "--set",
            "rbac.clusterWide=true,rbac.impersonation.enabled=true,"
            "rbac.impersonation.projects={7},rbac.impersonation.admin=true",
        )
        assert can("impersonate", "users/clusterport:token:42")
        for group in (
            "clusterport:project:7",
            "clusterport:project:7:reporter",
            "clusterport:project:7:maintainer",
            "clusterport:admin",
        ):
            assert can("impersonate", f"groups/{group}"), group
        for group in ("system:masters", "clusterport:project:8", "clusterport:project:8:developer"):
            assert not can("impersonate", f"groups/{group}"), group
        assert not can("impersonate", "groups")
    finally:
        helm_run("uninstall", release)
        for name in (other, workloads):
            kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
    assert not can("create", "deployments.apps", other)
