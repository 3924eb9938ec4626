"""Runtime configuration, read from `CLUSTERPORT_*` environment variables."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PLACEHOLDER_KEYS = {"", "change-me", "changeme", "placeholder"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLUSTERPORT_", extra="ignore")

    # Storage and messaging. Unset means the embedded default (SQLite file, in-process broker).
    database_url: str | None = None
    broker_url: SecretStr | None = None
    data_dir: Path = Path(".clusterport")

    # First key encrypts, every key decrypts (comma-separated Fernet keys).
    encryption_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)

    # Keys for internal credentials (app/core/signing.py), comma-separated: the first signs,
    # every one verifies. Unset: derived from the encryption keys.
    signing_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)

    bind_host: str = "127.0.0.1"
    api_port: int = 8080
    agent_port: int = 8150
    health_port: int = 8151

    allow_local_network: bool = False
    # Pod Security Admission level of the namespaces clusterport creates in clusters.
    namespace_pod_security: Literal["restricted", "baseline", "privileged"] = "restricted"
    bootstrap_token: SecretStr | None = None

    # Unset: `console` when stderr is a terminal, `json` otherwise.
    log_format: Literal["json", "console"] | None = None
    log_level: str = "INFO"

    worker_threads: int = 8

    # Transient failures (database or broker connection, Kubernetes 429, 5xx, timeouts) are
    # retried this many times, with exponential backoff from 0.5 s up to this maximum.
    retry_limit: int = 10
    retry_max_backoff_seconds: float = 10.0
    # Workers send outbox rows older than `outbox_relay_after_seconds` (the request that wrote
    # them could not), looking every `outbox_relay_interval_seconds`.
    outbox_relay_interval_seconds: float = 1.0
    outbox_relay_after_seconds: float = 5.0
    # Every `reconcile_interval_seconds`, records pending longer than their `retry_at` plus
    # `reconcile_grace_seconds` are queued again.
    reconcile_interval_seconds: float = 10.0
    reconcile_grace_seconds: float = 30.0

    @field_validator("encryption_keys", "signing_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "clusterport.db"

    def effective_database_url(self) -> str:
        """The configured URL, or the embedded SQLite file."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.sqlite_path.resolve()}"


@functools.cache
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    """Forget the cached settings (used when the CLI or tests change the environment)."""
    get_settings.cache_clear()
