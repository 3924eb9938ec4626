"""Regions where EKS is offered, from botocore's bundled endpoint data (no network call)."""

from __future__ import annotations

from functools import lru_cache

import boto3


@lru_cache
def eks_regions() -> frozenset[str]:
    """EKS regions of the commercial `aws` partition (the one clusterport's tokens target)."""
    return frozenset(boto3.session.Session().get_available_regions("eks", partition_name="aws"))
