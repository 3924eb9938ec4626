"""Settings for EKS provisioning (CLUSTERPORT_EKS_*): polling cadence, limits, clean-up."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class EksSettings(BaseSettings):
    """How provisioning paces itself and when it gives up."""

    model_config = SettingsConfigDict(env_prefix="CLUSTERPORT_EKS_", extra="ignore")

    poll_initial_delay_seconds: float = Field(default=60.0, ge=0)
    poll_interval_seconds: float = Field(default=30.0, gt=0)
    timeout_seconds: float = Field(default=1800.0, gt=0)
    # Temporary credentials are refreshed when they expire within this margin.
    credential_refresh_margin_seconds: float = Field(default=300.0, ge=0)
    role_session_seconds: int = Field(default=3600, ge=900, le=43200)
    # A record whose next step was due this long ago without running is re-enqueued.
    stall_after_seconds: float = Field(default=120.0, gt=0)
    reconcile_interval_seconds: float = Field(default=60.0, gt=0)
    # Consecutive retryable AWS or cluster errors allowed before the cluster is errored.
    max_transient_failures: int = Field(default=5, ge=1)
    retry_delay_seconds: float = Field(default=15.0, ge=0)
    delete_stack_on_failure: bool = False
    stack_prefix: str = Field(default="clusterport", pattern=r"^[A-Za-z][A-Za-z0-9-]{0,40}$")
    # Another template with the same parameters and outputs (tests use a stand-in).
    template_path: Path | None = None


@lru_cache
def get_eks_settings() -> EksSettings:
    """Settings read once from the environment."""
    return EksSettings()
