"""Agent server settings (CLUSTERPORT_ prefix, same environment as the rest of clusterport)."""

from __future__ import annotations

import functools
import ipaddress
import os
import socket
import ssl
import uuid
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Networks = Annotated[list[ipaddress.IPv4Network | ipaddress.IPv6Network], NoDecode]


class AgentServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLUSTERPORT_", extra="ignore")

    # Where the agent and proxy ports listen; CLUSTERPORT_BIND_HOST when unset.
    agent_bind_host: str | None = None
    agent_port: int = 8150
    health_port: int = 8151
    agent_proxy_port: int = 8154
    # Name and private proxy URL of this replica, for routing from the other replicas.
    agent_replica_name: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    )
    agent_advertise_url: str | None = None
    # Where workers send Kubernetes API requests for clusters reached through an agent: the
    # proxy port of any replica (a Service in front of them all); it routes to the replica that
    # holds the agent. Unset: this replica's own URL, as in `clusterport serve`.
    agent_proxy_internal_url: str | None = None
    # The proxy URL people and CI reach (namespace kubeconfigs point there). Unset: the internal
    # one.
    agent_proxy_public_url: str | None = None
    # TLS for the agent websocket (wss) and the proxy (https): kubectl sends tokens only over
    # TLS. Unset when a load balancer in front terminates TLS.
    agent_tls_cert_file: Path | None = None
    agent_tls_key_file: Path | None = None
    # CA to verify other replicas' proxy URLs with when routing (system store when unset).
    agent_tls_ca_file: Path | None = None
    agent_ip_allow: Networks = []
    agent_ip_deny: Networks = []
    # Load balancers whose X-Forwarded-For is believed; from anyone else it is ignored.
    agent_trusted_proxies: Networks = []
    # Token buckets for new agent connections: every attempt per token, and failed attempts
    # per source address (a valid agent is never locked out by its neighbours' garbage).
    agent_token_rate: float = 1.0
    agent_token_burst: int = 5
    agent_ip_rate: float = 50.0
    agent_ip_burst: int = 200
    # Live connections per agent token over all replicas (the agent chart runs 2 replicas;
    # a rolling update briefly adds one more).
    agent_max_connections_per_token: int = 4
    agent_heartbeat_interval: float = 15.0
    agent_drain_reconnect_ms: int = 2000
    agent_drain_grace: float = 10.0
    # How often revocations and replica liveness are checked, seconds.
    agent_revocation_poll: float = 0.25
    agent_replica_heartbeat: float = 2.0
    agent_replica_dead_after: float = 6.0

    @field_validator("agent_ip_allow", "agent_ip_deny", "agent_trusted_proxies", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [ipaddress.ip_network(v.strip(), strict=False) for v in value.split(",") if v]
        return value

    @property
    def bind_host(self) -> str:
        from app.core.settings import get_settings

        return self.agent_bind_host or get_settings().bind_host

    @property
    def advertise_url(self) -> str:
        scheme = "https" if self.agent_tls_cert_file else "http"
        return self.agent_advertise_url or f"{scheme}://127.0.0.1:{self.agent_proxy_port}"

    @property
    def internal_proxy_url(self) -> str:
        return (self.agent_proxy_internal_url or self.advertise_url).rstrip("/")

    @property
    def public_proxy_url(self) -> str:
        return (self.agent_proxy_public_url or self.internal_proxy_url).rstrip("/")

    def server_ssl(self) -> ssl.SSLContext | None:
        if self.agent_tls_cert_file is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.agent_tls_cert_file, self.agent_tls_key_file)
        return context

    def client_ssl(self) -> ssl.SSLContext:
        cafile = str(self.agent_tls_ca_file) if self.agent_tls_ca_file else None
        return ssl.create_default_context(cafile=cafile)


@functools.cache
def get_agent_server_settings() -> AgentServerSettings:
    return AgentServerSettings()
