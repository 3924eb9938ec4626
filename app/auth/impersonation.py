"""Who a request through an agent acts as in the cluster: `Impersonate-*` headers.

The one place that turns a clusterport identity into impersonation headers. The agent server's
proxy adds them to requests it forwards; the agent's service account replays them, so the
cluster's own RBAC decides what the identity may do (the agent needs `impersonate` rights on
exactly those identities). Headers a client sends itself are refused, never passed on.
"""

from __future__ import annotations

from dataclasses import dataclass

IMPERSONATE_PREFIX = "impersonate-"


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


def impersonation_headers(identity: KubeIdentity) -> list[tuple[str, str]]:
    return [("Impersonate-User", identity.user)] + [
        ("Impersonate-Group", group) for group in identity.groups
    ]


def is_impersonation_header(name: str) -> bool:
    return name.lower().startswith(IMPERSONATE_PREFIX)
