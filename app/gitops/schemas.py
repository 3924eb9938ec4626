"""Request and response bodies for sources, environments and deployments."""

from __future__ import annotations

import posixpath
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, StringConstraints

from app.core.validation import DNSLabel
from app.gitops.models import (
    Deployment,
    DeploymentObject,
    DeploymentStatus,
    GitOpsEnvironment,
    GitSource,
    RenderMode,
    SyncStatus,
    Trigger,
)
from app.gitops.refs import normalize_ref


def _repo_path(value: str) -> str:
    value = value.strip()
    normal = posixpath.normpath(value) if value else "."
    if normal.startswith(("/", "..")) or "\x00" in normal:
        raise ValueError("must be a relative path inside the repository")
    return normal


RepoPath = Annotated[str, StringConstraints(max_length=1024), AfterValidator(_repo_path)]
GitRef = Annotated[str, StringConstraints(max_length=255), AfterValidator(normalize_ref)]
CommitSha = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{40}([0-9a-f]{24})?$")]
WebhookSecret = Annotated[SecretStr, Field(min_length=16, max_length=256)]


class SourceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: DNSLabel
    url: str = Field(
        max_length=2048,
        description="URL of the git repository: `https://...`, or `ssh://user@host[:port]/path` "
        "with a `deploy_key`.",
    )
    token: SecretStr | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="Access token, sent as HTTP basic auth password (stored encrypted).",
    )
    deploy_key: SecretStr | None = Field(
        default=None,
        min_length=1,
        max_length=16384,
        description="For ssh:// URLs: an unencrypted OpenSSH private key allowed to read the "
        "repository (stored encrypted, never returned).",
    )
    known_hosts: str | None = Field(
        default=None,
        max_length=16384,
        description="For ssh:// URLs: the server's host keys, as `ssh-keyscan` prints them "
        "(known_hosts lines); checked strictly.",
    )
    ref: GitRef = Field(
        default="refs/heads/main",
        description="A branch (`main`), a tag (`refs/tags/v1.0`) or a tag pattern "
        "(`refs/tags/v*`).",
    )
    paths: list[RepoPath] = Field(default_factory=lambda: ["."], min_length=1, max_length=20)
    render: RenderMode = RenderMode.plain
    helm_values_file: RepoPath | None = Field(
        default=None, description="Values file in the repository (helm render only)."
    )
    webhook_secret: WebhookSecret | None = Field(
        default=None,
        description="Secret for the webhook (GitLab token, GitHub or generic HMAC key); "
        "generated and shown once when omitted.",
    )
    poll_interval_seconds: int = Field(
        default=180,
        ge=0,
        le=86400,
        description="Look for new commits with `git ls-remote` this often, so a lost webhook "
        "only delays a deployment (0: never; tag patterns are not polled).",
    )


class SourceUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, max_length=2048)
    token: SecretStr | None = Field(default=None, max_length=4096, description="Empty clears it.")
    deploy_key: SecretStr | None = Field(default=None, max_length=16384)
    known_hosts: str | None = Field(default=None, max_length=16384)
    ref: GitRef | None = None
    paths: list[RepoPath] | None = Field(default=None, min_length=1, max_length=20)
    render: RenderMode | None = None
    helm_values_file: RepoPath | None = None
    webhook_secret: WebhookSecret | None = None
    poll_interval_seconds: int | None = Field(default=None, ge=0, le=86400)


class SourceRead(BaseModel):
    id: int
    project_id: int
    name: str
    url: str
    has_token: bool
    has_deploy_key: bool
    known_hosts: str | None
    ref: str
    paths: list[str]
    render: RenderMode
    helm_values_file: str | None
    hook_path: str = Field(description="POST webhooks here (relative to the API's base URL).")
    poll_interval_seconds: int
    last_polled_at: datetime | None
    last_polled_commit: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: GitSource, *, has_token: bool) -> SourceRead:
        return cls(
            id=row.id,
            project_id=row.project_id,
            name=row.name,
            url=row.url,
            has_token=has_token,
            # A source reached over ssh always has its deploy key (it cannot be cleared).
            has_deploy_key=row.url.lower().startswith("ssh://"),
            known_hosts=row.known_hosts,
            ref=row.ref,
            paths=list(row.paths),
            render=RenderMode(row.render),
            helm_values_file=row.helm_values_file,
            hook_path=f"/api/v1/hooks/{row.hook_id}",
            poll_interval_seconds=row.poll_interval_seconds,
            last_polled_at=row.last_polled_at,
            last_polled_commit=row.last_polled_commit,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class SourceCreated(SourceRead):
    webhook_secret: str | None = Field(
        description="The generated webhook secret, shown only now (null when you chose one)."
    )


class EnvironmentSettings(BaseModel):
    """What an environment is, apart from where its manifests come from and go to (shared by
    the API's create body and an agent's configuration file)."""

    model_config = ConfigDict(extra="forbid")

    name: DNSLabel
    namespace: DNSLabel
    auto_sync: bool = True
    prune: bool = True
    self_heal: bool = False
    health_timeout_seconds: int = Field(default=300, ge=5, le=3600)
    allow_cluster_scoped: bool = False
    extra_namespaces: list[Annotated[str, StringConstraints(pattern=r"^(\*|[a-z0-9-]{1,63})$")]] = (
        Field(default_factory=list, max_length=50)
    )
    max_prune_share: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="A prune of more than this share of the owned objects waits for confirmation.",
    )


class EnvironmentCreate(EnvironmentSettings):
    source_id: int
    cluster_id: int


class EnvironmentUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    auto_sync: bool | None = None
    prune: bool | None = None
    self_heal: bool | None = None
    health_timeout_seconds: int | None = Field(default=None, ge=5, le=3600)
    allow_cluster_scoped: bool | None = None
    extra_namespaces: (
        list[Annotated[str, StringConstraints(pattern=r"^(\*|[a-z0-9-]{1,63})$")]] | None
    ) = Field(default=None, max_length=50)
    max_prune_share: float | None = Field(default=None, ge=0, le=1)


class ObjectRefRead(BaseModel):
    api_version: str
    kind: str
    namespace: str
    name: str


class EnvironmentRead(BaseModel):
    id: int
    project_id: int
    name: str
    source_id: int
    cluster_id: int
    namespace: str
    configured_by_agent_id: int | None = Field(
        description="The agent whose configuration file declares this environment (pushes to "
        "that file update it), or null for an environment created through the API."
    )
    auto_sync: bool
    prune: bool
    self_heal: bool
    health_timeout_seconds: int
    allow_cluster_scoped: bool
    extra_namespaces: list[str]
    max_prune_share: float
    locked: bool
    inventory_size: int
    sync_status: SyncStatus
    drifted_objects: list[ObjectRefRead]
    drift_checked_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: GitOpsEnvironment) -> EnvironmentRead:
        return cls(
            id=row.id,
            project_id=row.project_id,
            name=row.name,
            source_id=row.source_id,
            cluster_id=row.cluster_id,
            namespace=row.namespace,
            configured_by_agent_id=row.configured_by_agent_id,
            auto_sync=row.auto_sync,
            prune=row.prune,
            self_heal=row.self_heal,
            health_timeout_seconds=row.health_timeout_seconds,
            allow_cluster_scoped=row.allow_cluster_scoped,
            extra_namespaces=list(row.extra_namespaces),
            max_prune_share=row.max_prune_share,
            locked=row.locked,
            inventory_size=len(row.inventory),
            sync_status=SyncStatus(row.sync_status),
            drifted_objects=[ObjectRefRead(**o) for o in row.drifted_objects],
            drift_checked_at=row.drift_checked_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class SyncRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    revision: CommitSha | None = Field(
        default=None, description="Commit to deploy; the followed ref's head when omitted."
    )


class DeploymentError(BaseModel):
    code: str
    message: str
    object: str | None


class DeploymentObjectRead(BaseModel):
    api_version: str
    kind: str
    namespace: str
    name: str
    action: str
    result: str
    health: str | None
    code: str | None
    reason: str | None

    @classmethod
    def of(cls, row: DeploymentObject) -> DeploymentObjectRead:
        return cls(
            api_version=row.api_version,
            kind=row.kind,
            namespace=row.namespace,
            name=row.name,
            action=row.action,
            result=row.result,
            health=row.health,
            code=row.code,
            reason=row.reason,
        )


class DeploymentRead(BaseModel):
    id: int
    project_id: int
    environment_id: int
    status: DeploymentStatus
    step: str | None
    trigger: Trigger
    triggered_by: str
    delivery_id: int | None
    coalesced: int
    ref: str | None
    commit_sha: str | None
    digest: str | None
    rollback_of_id: int | None
    prune_guard_reasons: list[str]
    error: DeploymentError | None
    created_at: datetime
    started_at: datetime | None
    applied_at: datetime | None
    finished_at: datetime | None
    objects: list[DeploymentObjectRead] | None = Field(
        default=None, description="Per-object state (single deployment reads only)."
    )

    @classmethod
    def of(cls, row: Deployment, objects: list[DeploymentObject] | None = None) -> DeploymentRead:
        error = None
        if row.error_code:
            error = DeploymentError(
                code=row.error_code,
                message=row.error_message or "The deployment failed.",
                object=row.failed_object,
            )
        return cls(
            id=row.id,
            project_id=row.project_id,
            environment_id=row.environment_id,
            status=DeploymentStatus(row.status),
            step=row.step,
            trigger=Trigger(row.trigger),
            triggered_by=row.triggered_by,
            delivery_id=row.delivery_id,
            coalesced=row.coalesced,
            ref=row.ref,
            commit_sha=row.commit_sha,
            digest=row.digest,
            rollback_of_id=row.rollback_of_id,
            prune_guard_reasons=list(row.prune_guard_reasons),
            error=error,
            created_at=row.created_at,
            started_at=row.started_at,
            applied_at=row.applied_at,
            finished_at=row.finished_at,
            objects=[DeploymentObjectRead.of(o) for o in objects] if objects is not None else None,
        )


class HookAccepted(BaseModel):
    status: str = Field(description="`accepted`, `duplicate`, `pong` or `ignored`.")
    delivery_id: int | None = None
