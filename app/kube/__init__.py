"""The only door to Kubernetes: a typed wrapper over the official client (see client.py).

Nothing outside this package imports `kubernetes`; import-linter enforces it.
"""

from app.kube.client import KubeClient, KubeOnEventLoopError, KubeVersion
from app.kube.dynamic import Resource
from app.kube.errors import KubeError

__all__ = ["KubeClient", "KubeError", "KubeOnEventLoopError", "KubeVersion", "Resource"]
