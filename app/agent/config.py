"""Agent settings from the environment (CLUSTERPORT_AGENT_*): server URL, token, kube access."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLUSTERPORT_AGENT_", extra="ignore")

    server_url: str = "ws://127.0.0.1:8150/agent/connect"
    token: str | None = Field(default=None, repr=False)
    token_file: Path | None = None
    # CA bundle to verify a wss:// server with; the system store when unset.
    server_ca_file: Path | None = None
    # Kubeconfig to reach the kube-apiserver; the pod's service account when unset.
    kubeconfig: Path | None = None
    kube_context: str | None = None
    # Where the pod's service account token and CA are mounted (in-cluster mode).
    service_account_dir: Path = Path("/var/run/secrets/kubernetes.io/serviceaccount")
    liveness_host: str = "0.0.0.0"  # noqa: S104 - probes come from the kubelet on the pod IP
    liveness_port: int = 8181
    backoff_base: float = 0.5
    backoff_cap: float = 30.0

    def read_token(self) -> str:
        if self.token_file is not None:
            token = self.token_file.read_text().strip()
        else:
            token = (self.token or "").strip()
        if not token:
            raise SystemExit(
                "no agent token: set CLUSTERPORT_AGENT_TOKEN or CLUSTERPORT_AGENT_TOKEN_FILE"
            )
        return token
