"""Dramatiq actors. Importing this package installs the broker, then declares every actor."""

import app.models  # noqa: F401  (actors query every model)
from app.core.broker import setup_broker
from app.core.settings import get_settings

broker = setup_broker(get_settings())

from workers import addons, cluster_state, clusters, eks, gitops, namespaces, reconcile  # noqa: E402

__all__ = [
    "addons",
    "broker",
    "cluster_state",
    "clusters",
    "eks",
    "gitops",
    "namespaces",
    "reconcile",
]
