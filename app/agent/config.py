"""Agent settings from the environment (CLUSTERPORT_AGENT_*): server URL, token, kube access."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLUSTERPORT_AGENT_", extra="ignore")

    server_url: str = "wss://127.0.0.1:8150/agent/connect"
    # A plain ws:// server URL sends the token unencrypted: only with this set (test set-ups).
    allow_insecure: bool = False
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

    def check_transport(self) -> None:
        """Refuse anything but wss://, and ws:// unless explicitly allowed."""
        scheme = self.server_url.partition("://")[0].lower()
        if scheme == "ws" and not self.allow_insecure:
            raise SystemExit(
                "CLUSTERPORT_AGENT_SERVER_URL is plain ws://: the agent token would cross the "
                "network unencrypted. Use wss://, or set CLUSTERPORT_AGENT_ALLOW_INSECURE=true "
                "for a test setup."
            )
        if scheme not in ("ws", "wss"):
            raise SystemExit("CLUSTERPORT_AGENT_SERVER_URL must start with wss://")

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
