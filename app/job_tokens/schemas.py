"""Request and response bodies for CI job credentials."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.core.validation import EnvironmentName
from app.namespaces.schemas import Kubeconfig

MAX_TTL_SECONDS = 3600


class JobTokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    environment: EnvironmentName = Field(description="The environment the job deploys to.")
    ttl_seconds: int = Field(
        default=MAX_TTL_SECONDS,
        ge=60,
        le=MAX_TTL_SECONDS,
        description="How long the credential works, at most an hour.",
    )


class JobTokenCreated(BaseModel):
    id: int
    project_id: int
    environment: str
    expires_at: datetime
    token: str = Field(description="The job's credential (`KUBE_TOKEN`). Shown only here.")
    kubeconfig: Kubeconfig = Field(
        description="One context per agent whose access list admits this project and "
        "environment; the first is current."
    )
    variables: dict[str, str] = Field(
        description="`KUBECONFIG` (the kubeconfig's content), `KUBE_URL`, `KUBE_TOKEN`, "
        "`KUBE_NAMESPACE` and `KUBE_CA_PEM` for the current context, ready to export."
    )
