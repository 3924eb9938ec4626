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
        raise SystemExit("not in a cluster: set CLUSTERPORT_AGENT_KUBECONFIG")
    if ":" in host:
        host = f"[{host}]"
    context = ssl.create_default_context(cafile=str(account_dir / "ca.crt"))
    return KubeTarget(f"https://{host}:{port}", context, token_file=account_dir / "token")


def from_kubeconfig(path: Path, context_name: str | None = None) -> KubeTarget:
    config: dict[str, Any] = yaml.safe_load(path.read_text())
    name = context_name or config.get("current-context")
    context = _named(config.get("contexts", []), name)
    cluster = _named(config.get("clusters", []), context["cluster"])
    user = _named(config.get("users", []), context.get("user"))
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


def _named(items: list[dict[str, Any]], name: str | None) -> dict[str, Any]:
    for item in items:
        if item.get("name") == name:
            return dict(item.get("context") or item.get("cluster") or item.get("user") or {})
    if name is None:
        return {}
    raise SystemExit(f"kubeconfig has no entry named {name!r}")


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
