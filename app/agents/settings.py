"""Settings of the agents API (CLUSTERPORT_ prefix)."""

from __future__ import annotations

import functools

from pydantic_settings import BaseSettings, SettingsConfigDict


class AgentsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLUSTERPORT_", extra="ignore")

    # Active (unrevoked, unexpired) tokens per agent: two allow a rotation without downtime.
    agent_max_tokens: int = 2
    # A connection row whose replica has not beaten for this long is not listed.
    agent_replica_dead_after: float = 6.0
    # Lifetime of the credential in a namespace kubeconfig of a cluster reached through an agent
    # (deleting the namespace revokes it sooner).
    agent_kubeconfig_ttl_hours: float = 24 * 30


@functools.cache
def get_agents_settings() -> AgentsSettings:
    return AgentsSettings()
