"""The only door to Kubernetes: a typed wrapper over the official client (see client.py).

Two transports give the same client: `KubeClient.from_platform` (a cluster's API URL) and
`KubeClient.through_agent` (the agent server's proxy and an agent's tunnel). Workers do not
choose: `app.clusters.connection.connection_of(cluster).client()` does.

Nothing outside this package imports `kubernetes`; import-linter enforces it.
"""

from app.kube.client import KubeClient, KubeOnEventLoopError, KubeVersion
from app.kube.dynamic import Resource
from app.kube.errors import KubeError

__all__ = ["KubeClient", "KubeError", "KubeOnEventLoopError", "KubeVersion", "Resource"]
