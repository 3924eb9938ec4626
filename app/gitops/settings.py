"""Settings of GitOps (CLUSTERPORT_ prefix): fetch limits, the git cache, rate limits."""

from __future__ import annotations

import functools
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class GitOpsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLUSTERPORT_GITOPS_", extra="ignore")

    # Where fetched repositories are kept (default: <data dir>/git-cache), and its bound.
    cache_dir: Path | None = None
    cache_max_bytes: int = 512 * 1024 * 1024
    # Limits of one render's input (kas uses the same numbers).
    max_file_bytes: int = 5 * 1024 * 1024
    max_total_bytes: int = 20 * 1024 * 1024
    max_files: int = 1000
    # Seconds a git command or a renderer may run.
    command_timeout: float = 60.0
    # Deployments a project may start per minute; a queued one waits (keeping the newest commit).
    project_deployments_per_minute: int = 30
    # A deployment that queued behind another starts once deliveries have been quiet this
    # long (a burst ends as one deployment of its newest commit), or after the maximum wait.
    coalesce_quiet_ms: int = 1_000
    coalesce_max_wait_ms: int = 30_000
    # How often a running deployment's health is looked at (a delayed re-enqueue).
    health_poll_ms: int = 250
    # Seconds between drift checks of an environment (after each successful deployment).
    drift_interval_seconds: int = 180
    # Paths of the tools; found on PATH when unset.
    kubectl: str = "kubectl"
    # A standalone kustomize (`kustomize build`); unset: `kubectl kustomize`.
    kustomize: str | None = None
    helm: str = "helm"
    git: str = "git"


@functools.cache
def get_gitops_settings() -> GitOpsSettings:
    return GitOpsSettings()
