"""Pytest plugin: a real Kubernetes API for the tests (session fixture `kube_cluster`).

Preference order: `KUBECONFIG` of a disposable cluster, then testcontainers K3s when a Docker
engine answers, then the cluster of scripts/kube-up (binaries from scripts/kube-tools) on random
loopback ports in a temporary directory.

That local cluster runs workloads without a kubelet: kube-scheduler binds pods to one fake node
(`kwok-node`) whose kubelet is kwok, so no container runs but pods go Running and Ready at once,
Deployments become Available and pods of Jobs succeed (the Job completes). kwok also serves:

- `kubectl exec POD -- CMD` runs CMD on this machine in `KubeCluster.exec_workdir` (a failing CMD
  gives kubectl an internal error mentioning `exit status N`, not the exit code N);
- `kubectl logs POD` prints the lines of `KubeCluster.pod_log` (the same file for every pod and
  container; add lines with `KubeCluster.append_pod_log`); `logs -f` and `kubectl attach` follow
  the lines added;
- `kubectl port-forward POD L:ANY` reaches `KubeCluster.forward_target`, a loopback HTTP server of
  this test session that answers every GET with `forwarded <path>` and echoes a POST body.

To make a pod FAIL on purpose, give it the label `POD_FAILS_LABEL` (value `"true"`, e.g. in a
Job's or Deployment's pod template): a second or two after it runs it ends `Failed` (container
terminated, exit code 1; annotations `pod-container-running-failed.stage.kwok.x-k8s.io/exit-code`,
`.../reason`, `.../message` change those). A Job with `backoffLimit: 0` then fails. A Deployment's
ReplicaSet replaces each failed pod with a new one that fails in turn (pods are Ready for a moment
before they fail; its rollout conditions in that case are not covered by tests here).
Those fields are None on clusters not started by kube-up (KUBECONFIG, K3s).
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = REPO_ROOT / "scripts"
K8S_VERSION = "v1.37.2"
# Namespace and names of the cluster-admin service account made on clusters we did not start.
ADMIN_SA_NAMESPACE = "kube-system"
ADMIN_SA_NAME = "clusterport-tests"
# Label (value "true") that makes kwok fail a running pod; see the module docstring.
POD_FAILS_LABEL = "pod-container-running-failed.stage.kwok.x-k8s.io"

HOW_TO_PROVIDE = (
    "No Kubernetes API for the tests. Provide one of: KUBECONFIG pointing at a disposable "
    "cluster; a Docker engine (testcontainers starts K3s); or the cached binaries from "
    "`scripts/kube-tools` (one-time build from the Go module proxy, several minutes; needs Go)."
)


@dataclass(frozen=True)
class KubeCluster:
    """Connection details of the test cluster, with an admin bearer token."""

    url: str
    ca_pem: str
    token: str
    kubeconfig: Path
    kubectl_path: str
    source: str
    # Only on the local kwok-backed cluster (see the module docstring).
    exec_workdir: Path | None = None
    pod_log: Path | None = None
    forward_target: str | None = None

    def append_pod_log(self, text: str) -> None:
        """Add a line to what `kubectl logs` prints for every pod (local cluster only)."""
        assert self.pod_log is not None, "pod logs come from kwok on the local cluster only"
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        with self.pod_log.open("a") as log:
            log.write(f"{now} stdout F {text}\n")

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against the cluster as admin; raise with its stderr when check fails."""
        proc = subprocess.run(
            [self.kubectl_path, "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def namespace_state(self, name: str) -> str:
        """`absent`, `terminating` (deletion started) or `active`."""
        got = self.kubectl(
            "get", "namespace", name, "-o", "jsonpath={.metadata.deletionTimestamp}", check=False
        )
        if got.returncode != 0:
            return "absent"
        return "terminating" if got.stdout.strip() else "active"

    def kubectl_json(self, *args: str) -> dict[str, Any]:
        """Run `kubectl ... -o json` and return the parsed object."""
        out: dict[str, Any] = json.loads(self.kubectl(*args, "-o", "json").stdout)
        return out


def tools_bin_dir() -> Path:
    """Where scripts/kube-tools caches the binaries for the pinned Kubernetes version."""
    base = os.environ.get("CLUSTERPORT_TOOLS_DIR") or str(
        Path.home() / ".cache" / "clusterport" / "tools"
    )
    return Path(base) / f"k8s-{K8S_VERSION}" / "bin"


def _find_kubectl() -> str:
    built = tools_bin_dir() / "kubectl"
    if built.is_file():
        return str(built)
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail(f"kubectl not found. {HOW_TO_PROVIDE}", pytrace=False)
    return found


def _write_kubeconfig(path: Path, url: str, ca_pem: str, token: str) -> None:
    # JSON is valid kubeconfig YAML; written owner-only because it holds an admin token.
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "test",
                "cluster": {
                    "server": url,
                    "certificate-authority-data": base64.b64encode(ca_pem.encode()).decode(),
                },
            }
        ],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
        "current-context": "test",
    }
    path.touch(mode=0o600)
    path.write_text(json.dumps(config))


def _adopt_cluster(source_kubeconfig: str, workdir: Path, source: str) -> KubeCluster:
    """Turn any admin kubeconfig into url + CA + a bearer token of a cluster-admin account."""
    kubectl = _find_kubectl()
    # Through the environment, so a KUBECONFIG list (a:b) works as kubectl reads it.
    env = {**os.environ, "KUBECONFIG": source_kubeconfig}

    def run(*args: str, stdin: str | None = None) -> str:
        proc = subprocess.run(
            [kubectl, *args],
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if proc.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}", pytrace=False)
        return proc.stdout

    view = json.loads(run("config", "view", "--raw", "--minify", "--flatten", "-o", "json"))
    cluster = view["clusters"][0]["cluster"]
    url = cluster["server"]
    ca_data = cluster.get("certificate-authority-data")
    if not ca_data:
        pytest.fail(f"{source_kubeconfig}: the test cluster needs a CA bundle", pytrace=False)
    ca_pem = base64.b64decode(ca_data).decode()
    manifest = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": ADMIN_SA_NAME, "namespace": ADMIN_SA_NAMESPACE},
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": ADMIN_SA_NAME},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "cluster-admin",
                },
                "subjects": [
                    {
                        "kind": "ServiceAccount",
                        "name": ADMIN_SA_NAME,
                        "namespace": ADMIN_SA_NAMESPACE,
                    }
                ],
            },
        ],
    }
    run("apply", "-f", "-", stdin=json.dumps(manifest))
    token = run(
        "create", "token", ADMIN_SA_NAME, "-n", ADMIN_SA_NAMESPACE, "--duration", "4h"
    ).strip()
    kubeconfig = workdir / "kubeconfig"
    _write_kubeconfig(kubeconfig, url, ca_pem, token)
    return KubeCluster(url, ca_pem, token, kubeconfig, kubectl, source)


def _docker_answers() -> bool:
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        return False
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _k3s(workdir: Path) -> Iterator[KubeCluster]:
    from testcontainers.community.k3s import K3SContainer

    with K3SContainer() as k3s:
        source = workdir / "k3s.yaml"
        source.touch(mode=0o600)
        source.write_text(k3s.config_yaml())
        yield _adopt_cluster(str(source), workdir, "k3s")


class _ForwardTarget(BaseHTTPRequestHandler):
    """What `kubectl port-forward` reaches on the local cluster."""

    def do_GET(self) -> None:
        self._answer(f"forwarded {self.path}".encode())

    def do_POST(self) -> None:
        self._answer(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _local(workdir: Path) -> Iterator[KubeCluster]:
    bin_dir = tools_bin_dir()
    tools = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
    missing = [t for t in (*tools, "kwok") if not (bin_dir / t).is_file()]
    if missing:
        pytest.fail(f"missing {', '.join(missing)} in {bin_dir}. {HOW_TO_PROVIDE}", pytrace=False)
    state = workdir / "control-plane"
    target = ThreadingHTTPServer(("127.0.0.1", 0), _ForwardTarget)
    target.daemon_threads = True
    threading.Thread(target=target.serve_forever, name="port-forward-target", daemon=True).start()
    env = {
        **os.environ,
        "CLUSTERPORT_TOOLS_DIR": str(bin_dir.parent.parent),
        "CLUSTERPORT_KWOK_FORWARD_PORT": str(target.server_port),
        # kube-up's watchdog stops the cluster even if this process dies without teardown.
        "CLUSTERPORT_KUBE_OWNER_PID": str(os.getpid()),
    }
    try:
        up = subprocess.run(
            [str(SCRIPTS / "kube-up"), str(state)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if up.returncode != 0:
            pytest.fail(f"scripts/kube-up failed:\n{up.stderr}", pytrace=False)
        yield KubeCluster(
            url=(state / "server").read_text().strip(),
            ca_pem=(state / "ca.crt").read_text(),
            token=(state / "token").read_text().strip(),
            kubeconfig=state / "kubeconfig",
            kubectl_path=str(bin_dir / "kubectl"),
            source="local",
            exec_workdir=state / "exec",
            pod_log=state / "pods.log",
            forward_target=f"127.0.0.1:{target.server_port}",
        )
    finally:
        subprocess.run(
            [str(SCRIPTS / "kube-down"), str(state)], capture_output=True, timeout=60, check=False
        )
        target.shutdown()
        target.server_close()


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    """A real Kubernetes API for the whole test session (see the module docstring)."""
    workdir = tmp_path_factory.mktemp("kube")
    env_kubeconfig = os.environ.get("KUBECONFIG")
    if env_kubeconfig:
        yield _adopt_cluster(env_kubeconfig, workdir, "kubeconfig")
    elif _docker_answers():
        yield from _k3s(workdir)
    else:
        yield from _local(workdir)


def unique_name(prefix: str) -> str:
    """A DNS-1123 name that will not clash with other tests or earlier runs on the cluster."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"
