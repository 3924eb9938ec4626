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


@functools.cache
def get_agents_settings() -> AgentsSettings:
    return AgentsSettings()
