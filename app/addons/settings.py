"""Settings for add-ons (CLUSTERPORT_ADDONS_*): catalogue, installer pods, pacing, limits."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class AddonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLUSTERPORT_ADDONS_", extra="ignore")

    # A YAML or JSON list of catalogue entries added to (or replacing) the built-in ones.
    catalogue_file: Path | None = None
    # One chart repository (HTTP or oci://) that mirrors every built-in chart, for clusters
    # that cannot reach the public repositories.
    chart_repository: str | None = None
    # The clusterport image: install pods run `helm` from it.
    installer_image: str = "clusterport:latest"
    installer_node_selector: dict[str, str] = Field(default_factory=dict)
    # Extra labels on install pods (network policies, cost allocation, ...).
    installer_pod_labels: dict[str, str] = Field(default_factory=dict)
    # How often a running install Job is looked at at most (a delayed re-enqueue, never a
    # sleep); young Jobs are looked at more often (see operations.poll_delay).
    poll_interval_seconds: float = Field(default=1.0, gt=0)
    # An install pod that has not started running after this long ends the operation.
    start_timeout_seconds: float = Field(default=300.0, gt=0)
    # helm's own --timeout; the Job's deadline is this plus a margin.
    helm_timeout_seconds: int = Field(default=600, ge=30)
    # Finished Jobs (and their pods, with the log) are removed by Kubernetes after this.
    job_ttl_seconds: int = Field(default=86_400, ge=0)
    # Installed add-ons are checked for drift and health this often.
    health_interval_seconds: float = Field(default=300.0, gt=0)
    log_tail_bytes: int = Field(default=16_384, ge=1_024, le=262_144)
    # Consecutive transient cluster errors allowed before an operation is errored.
    max_transient_failures: int = Field(default=5, ge=1)
    retry_delay_seconds: float = Field(default=5.0, ge=0)
    # A pending operation whose next run was due this long ago is taken as lost.
    stall_after_seconds: float = Field(default=60.0, gt=0)


@lru_cache
def get_addon_settings() -> AddonSettings:
    return AddonSettings()
