"""Every ORM model, imported in one place so Alembic and mappers see the whole schema."""

from app.addons.models import ClusterAddon
from app.agents.models import (
    Agent,
    AgentAccess,
    AgentConnection,
    AgentServerReplica,
    AgentToken,
    AgentTokenSource,
)
from app.audit.models import AuditEvent
from app.auth.models import AccessToken
from app.cluster_state.models import ClusterResourceCache
from app.clusters.models import Cluster, KubernetesPlatform
from app.core.db import Base
from app.core.jobs import OutboxJob
from app.gitops.models import (
    Deployment,
    DeploymentObject,
    GitOpsEnvironment,
    GitSource,
    WebhookDelivery,
)
from app.job_tokens.models import JobToken
from app.namespaces.models import ProjectNamespace
from app.projects.models import Project
from app.providers.aws.models import AwsExternalId, EksProvider

__all__ = [
    "AccessToken",
    "Agent",
    "AgentAccess",
    "AgentConnection",
    "AgentServerReplica",
    "AgentToken",
    "AgentTokenSource",
    "AuditEvent",
    "AwsExternalId",
    "Base",
    "Cluster",
    "ClusterAddon",
    "ClusterResourceCache",
    "Deployment",
    "DeploymentObject",
    "EksProvider",
    "GitOpsEnvironment",
    "GitSource",
    "JobToken",
    "KubernetesPlatform",
    "OutboxJob",
    "Project",
    "ProjectNamespace",
    "WebhookDelivery",
]
