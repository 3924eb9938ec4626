"""Cluster providers that create clusters for a project (Amazon EKS so far)."""
