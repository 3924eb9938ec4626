"""Agent settings from the environment (CLUSTERPORT_AGENT_*): server URL, token, kube access."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.tunnel.frames import AGENT_PATH


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLUSTERPORT_AGENT_", extra="ignore")

    # wss://host[:port][/agent/connect]; a bare host gets the agent path.
    server_url: str = "wss://127.0.0.1:8150/agent/connect"
    # A plain ws:// server URL sends the token unencrypted: only with this set (test set-ups).
    allow_insecure: bool = False
    token: str | None = Field(default=None, repr=False)
    token_file: Path | None = None
    # CA bundle to verify a wss:// server with; the system store when unset.
    server_ca_file: Path | None = None
    # Kubeconfig to reach the kube-apiserver. Unset: the pod's service account in a pod,
    # else $KUBECONFIG (or ~/.kube/config) and its current context.
    kubeconfig: Path | None = None
    kube_context: str | None = None
    # Where the pod's service account token and CA are mounted (in-cluster mode).
    service_account_dir: Path = Path("/var/run/secrets/kubernetes.io/serviceaccount")
    # The health port listens where the rest of clusterport does (0.0.0.0 in the image).
    liveness_host: str = Field(
        default="127.0.0.1",
        validation_alias=AliasChoices("CLUSTERPORT_AGENT_LIVENESS_HOST", "CLUSTERPORT_BIND_HOST"),
    )
    liveness_port: int = 8181
    # Offer the `gitops-apply` capability (pull-based deployments applied by this agent).
    # Off: the server deploys through the Kubernetes API proxy instead.
    gitops_apply: bool = True
    backoff_base: float = 0.5
    backoff_cap: float = 30.0

    @field_validator("server_url")
    @classmethod
    def _agent_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("wss", "ws") or not parts.hostname:
            raise ValueError("must look like wss://HOST[:PORT][/agent/connect]")
        if parts.path in ("", "/"):
            parts = parts._replace(path=AGENT_PATH)
        return urlunsplit(parts)

    def check_transport(self) -> None:
        """Refuse a plain ws:// server URL unless explicitly allowed."""
        if urlsplit(self.server_url).scheme == "ws" and not self.allow_insecure:
            raise SystemExit(
                "CLUSTERPORT_AGENT_SERVER_URL is plain ws://: the agent token would cross the "
                "network unencrypted. Use wss://, or set CLUSTERPORT_AGENT_ALLOW_INSECURE=true "
                "for a test setup."
            )

    def read_token(self) -> str:
        if self.token_file is not None:
            try:
                token = self.token_file.read_text().strip()
            except OSError as exc:
                raise SystemExit(
                    f"clusterport agent: cannot read CLUSTERPORT_AGENT_TOKEN_FILE "
                    f"{self.token_file}: {exc.strerror}"
                ) from None
        else:
            token = (self.token or "").strip()
        if not token:
            raise SystemExit(
                "clusterport agent: no agent token: set CLUSTERPORT_AGENT_TOKEN or "
                "CLUSTERPORT_AGENT_TOKEN_FILE (create one with POST "
                "/api/v1/projects/ID/agents/ID/tokens)"
            )
        return token
