"""Who a request through an agent acts as in the cluster: `Impersonate-*` headers.

The one place that turns a clusterport identity into impersonation headers. The agent server's
proxy adds them to requests it forwards; the agent's service account replays them, so the
cluster's own RBAC decides what the identity may do (the agent needs `impersonate` rights on
exactly those identities). Headers a client sends itself are refused, never passed on.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.auth.models import Role
from app.auth.principal import Principal

IMPERSONATE_PREFIX = "impersonate-"
# Every name clusterport impersonates starts with this, so the agent's ClusterRole can be
# limited to them (`resourceNames` on users) and cluster RBAC can tell them apart.
NAME_PREFIX = "clusterport:"
ADMIN_GROUP = "clusterport:admin"
PROJECT_ROLES = (Role.reporter, Role.developer, Role.maintainer)


@dataclass(frozen=True, slots=True)
class KubeIdentity:
    """A Kubernetes user name with its groups. No groups: the cluster fills them in where it
    knows them (a service account's `system:serviceaccounts[:<namespace>]`), and sending them
    would need the extra right to impersonate groups."""

    user: str
    groups: tuple[str, ...] = ()

    @classmethod
    def service_account(cls, namespace: str, name: str) -> KubeIdentity:
        return cls(f"system:serviceaccount:{namespace}:{name}")

    @classmethod
    def token(cls, principal: Principal) -> KubeIdentity:
        """An API token: user `clusterport:token:<id>`.

        A project token gets `clusterport:project:<id>` and one `clusterport:project:<id>:<role>`
        group for its role and each weaker one, so a RoleBinding to the weakest role that should
        have a right covers every stronger role too. An instance admin token belongs to no
        project: it gets the single group `clusterport:admin`.
        """
        user = f"{NAME_PREFIX}token:{principal.token_id}"
        if principal.project_id is None:
            return cls(user, (ADMIN_GROUP,))
        return cls(user, project_groups(principal.project_id, principal.role))

    @classmethod
    def ci_job(cls, job_id: int, project_id: int, environment_slug: str) -> KubeIdentity:
        """A CI job credential: user `clusterport:ci_job:<id>`, groups of its project and its
        environment (by slug, as namespaces are named)."""
        return cls(
            f"{NAME_PREFIX}ci_job:{job_id}",
            (f"{NAME_PREFIX}project:{project_id}", f"{NAME_PREFIX}environment:{environment_slug}"),
        )


def project_groups(project_id: int, role: Role) -> tuple[str, ...]:
    base = f"{NAME_PREFIX}project:{project_id}"
    return (base, *(f"{base}:{r.value}" for r in PROJECT_ROLES if r.rank <= role.rank))


def impersonation_headers(identity: KubeIdentity) -> list[tuple[str, str]]:
    return [("Impersonate-User", identity.user)] + [
        ("Impersonate-Group", group) for group in identity.groups
    ]


def is_impersonation_header(name: str) -> bool:
    return name.lower().startswith(IMPERSONATE_PREFIX)
