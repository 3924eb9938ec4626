"""Reactive cache of cluster state (pods, deployments, services, namespaces) for the API."""
