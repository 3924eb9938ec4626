"""How the agent reaches its kube-apiserver: kubeconfig or the pod's service account."""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass
class KubeTarget:
    """Base URL, TLS context and credentials for the kube-apiserver."""

    base_url: str
    ssl_context: ssl.SSLContext | bool
    token: str | None = None
    token_file: Path | None = None
    _token_read_at: float = 0.0

    def auth_header(self) -> str | None:
        # Projected service account tokens rotate: re-read the file once a minute.
        stale = self.token is None or time.monotonic() - self._token_read_at > 60
        if self.token_file is not None and stale:
            self.token = self.token_file.read_text().strip()
            self._token_read_at = time.monotonic()
        return f"Bearer {self.token}" if self.token else None


def in_cluster(account_dir: Path = SERVICE_ACCOUNT_DIR) -> KubeTarget:
    """The kube-apiserver as a pod sees it: service env variables and the mounted token."""
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise SystemExit("clusterport agent: not in a pod: set CLUSTERPORT_AGENT_KUBECONFIG")
    if ":" in host:
        host = f"[{host}]"
    context = ssl.create_default_context(cafile=str(account_dir / "ca.crt"))
    return KubeTarget(f"https://{host}:{port}", context, token_file=account_dir / "token")


def from_kubeconfig(path: Path, context_name: str | None = None) -> KubeTarget:
    try:
        config: Any = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SystemExit(
            f"clusterport agent: cannot read kubeconfig {path}: {exc.strerror}"
        ) from None
    except yaml.YAMLError:
        raise SystemExit(f"clusterport agent: kubeconfig {path} is not valid YAML") from None
    if not isinstance(config, dict):
        raise SystemExit(f"clusterport agent: {path} is not a kubeconfig")
    name = context_name or config.get("current-context")
    if not name:
        raise SystemExit(
            f"clusterport agent: {path} has no current context: set CLUSTERPORT_AGENT_KUBE_CONTEXT"
        )
    context = _named(path, config.get("contexts") or [], "context", name)
    cluster = _named(path, config.get("clusters") or [], "cluster", context.get("cluster"))
    user = _named(path, config.get("users") or [], "user", context.get("user"))
    if "server" not in cluster:
        raise SystemExit(f"clusterport agent: cluster of context {name!r} in {path} has no server")
    if user.get("exec") or user.get("auth-provider"):
        raise SystemExit(
            f"clusterport agent: the user of context {name!r} in {path} gets its credentials "
            "from a plugin, which the agent does not run: use a kubeconfig with a token or a "
            "client certificate (for example a service account's, `kubectl create token`)"
        )
    server = str(cluster["server"]).rstrip("/")
    ssl_context: ssl.SSLContext | bool = True
    if server.startswith("https://"):
        if cluster.get("insecure-skip-tls-verify"):
            ssl_context = False
        else:
            ssl_context = ssl.create_default_context()
            if cluster.get("certificate-authority-data"):
                ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
                ssl_context.load_verify_locations(cadata=ca)
            elif cluster.get("certificate-authority"):
                ssl_context.load_verify_locations(cafile=cluster["certificate-authority"])
            _load_client_cert(ssl_context, user)
    token = user.get("token")
    token_file = Path(user["tokenFile"]) if user.get("tokenFile") else None
    return KubeTarget(server, ssl_context, token=token, token_file=token_file)


def default_kubeconfig() -> Path | None:
    """The kubeconfig kubectl would read: the first existing file of $KUBECONFIG, else
    ~/.kube/config when it exists."""
    listed = [Path(p).expanduser() for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    for candidate in listed or [Path("~/.kube/config").expanduser()]:
        if candidate.is_file():
            return candidate
    return None


def choose_target(
    kubeconfig: Path | None, context: str | None, account_dir: Path = SERVICE_ACCOUNT_DIR
) -> KubeTarget:
    """CLUSTERPORT_AGENT_KUBECONFIG, else the pod's service account, else $KUBECONFIG."""
    if kubeconfig is not None:
        return from_kubeconfig(kubeconfig, context)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return in_cluster(account_dir)
    found = default_kubeconfig()
    if found is None:
        raise SystemExit(
            "clusterport agent: no Kubernetes API to serve: not in a pod, and no kubeconfig "
            "(set CLUSTERPORT_AGENT_KUBECONFIG or KUBECONFIG)"
        )
    return from_kubeconfig(found, context)


def _named(path: Path, items: list[Any], kind: str, name: Any) -> dict[str, Any]:
    for item in items:
        if isinstance(item, dict) and item.get("name") == name:
            return dict(item.get(kind) or {})
    if name is None and kind == "user":
        return {}
    raise SystemExit(f"clusterport agent: kubeconfig {path} has no {kind} named {name!r}")


def _load_client_cert(context: ssl.SSLContext, user: dict[str, Any]) -> None:
    if user.get("client-certificate"):
        context.load_cert_chain(user["client-certificate"], user.get("client-key"))
    elif user.get("client-certificate-data"):
        # ssl only loads chains from files: write them to a private temporary directory.
        folder = tempfile.mkdtemp(prefix="clusterport-agent-")
        cert, key = Path(folder, "tls.crt"), Path(folder, "tls.key")
        for target, field in ((cert, "client-certificate-data"), (key, "client-key-data")):
            target.touch(mode=0o600)
            target.write_bytes(base64.b64decode(user[field]))
        context.load_cert_chain(str(cert), str(key))
