"""Cluster add-ons: pinned Helm charts installed by Jobs in the managed namespace."""
