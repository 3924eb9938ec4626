"""Settings for talking to AWS (CLUSTERPORT_AWS_*): endpoint override and client timeouts."""

from __future__ import annotations

from functools import lru_cache

from pydantic_settings import BaseSettings, SettingsConfigDict


class AwsSettings(BaseSettings):
    """Where AWS calls go and how long they may take."""

    model_config = SettingsConfigDict(env_prefix="CLUSTERPORT_AWS_", extra="ignore")

    # Sends every STS, CloudFormation and EKS call to one endpoint (moto in tests).
    endpoint_url: str | None = None
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 30.0
    max_attempts: int = 3


@lru_cache
def get_aws_settings() -> AwsSettings:
    """Settings read once from the environment."""
    return AwsSettings()
