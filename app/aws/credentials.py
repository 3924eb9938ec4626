"""Temporary AWS credentials as plain data, and boto3 clients built from them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

from app.aws.settings import get_aws_settings

if TYPE_CHECKING:
    from mypy_boto3_cloudformation import CloudFormationClient
    from mypy_boto3_eks import EKSClient
    from mypy_boto3_sts import STSClient


@dataclass(frozen=True, repr=False)
class TemporaryCredentials:
    """Credentials from AssumeRole. repr hides them so they never reach a log line."""

    access_key_id: str
    secret_access_key: str
    session_token: str
    expiration: datetime

    def __repr__(self) -> str:
        return f"TemporaryCredentials(expiration={self.expiration.isoformat()})"

    def expires_within(self, margin: timedelta, *, now: datetime | None = None) -> bool:
        """True when the credentials are expired or will be within `margin`."""
        return self.expiration - margin <= (now or datetime.now(UTC))


def _session(credentials: TemporaryCredentials | None, region: str) -> boto3.session.Session:
    if credentials is None:
        # The service's own identity from the default chain (instance role, IRSA, env).
        return boto3.session.Session(region_name=region)
    return boto3.session.Session(
        aws_access_key_id=credentials.access_key_id,
        aws_secret_access_key=credentials.secret_access_key,
        aws_session_token=credentials.session_token,
        region_name=region,
    )


def _config() -> Config:
    settings = get_aws_settings()
    return Config(
        connect_timeout=settings.connect_timeout_seconds,
        read_timeout=settings.read_timeout_seconds,
        retries={"mode": "standard", "max_attempts": settings.max_attempts},
        user_agent_extra="clusterport",
    )


def sts_client(region: str, credentials: TemporaryCredentials | None = None) -> STSClient:
    """STS client for `region`, with the service identity unless credentials are given."""
    return _session(credentials, region).client(
        "sts", endpoint_url=get_aws_settings().endpoint_url, config=_config()
    )


def cloudformation_client(region: str, credentials: TemporaryCredentials) -> CloudFormationClient:
    """CloudFormation client acting with the assumed role's credentials."""
    return _session(credentials, region).client(
        "cloudformation", endpoint_url=get_aws_settings().endpoint_url, config=_config()
    )


def eks_client(region: str, credentials: TemporaryCredentials) -> EKSClient:
    """EKS client acting with the assumed role's credentials."""
    return _session(credentials, region).client(
        "eks", endpoint_url=get_aws_settings().endpoint_url, config=_config()
    )
