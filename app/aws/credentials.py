"""Temporary AWS credentials as plain data, and boto3 clients built from them."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from app.aws.settings import get_aws_settings

if TYPE_CHECKING:
    from mypy_boto3_cloudformation import CloudFormationClient
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


# One boto3 session per thread: creating a session loads botocore's service models again
# (tens of milliseconds of JSON parsing), while a client made from a warm session is cheap.
# Sessions are not thread-safe, hence one per thread; credentials are given per client.
_local = threading.local()


def _session(credentials: TemporaryCredentials | None) -> boto3.session.Session:
    if credentials is None:
        # The service's own identity: a new session reads the default chain afresh (a
        # session caches what it found). Only AssumeRole, about once an hour, goes this way.
        return boto3.session.Session()
    session: boto3.session.Session | None = getattr(_local, "session", None)
    if session is None:
        session = _local.session = boto3.session.Session()
    return session


def _client_options(region: str, credentials: TemporaryCredentials | None) -> dict[str, Any]:
    settings = get_aws_settings()
    options: dict[str, Any] = {
        "region_name": region,
        "endpoint_url": settings.endpoint_url,
        "config": Config(
            connect_timeout=settings.connect_timeout_seconds,
            read_timeout=settings.read_timeout_seconds,
            retries={"mode": "standard", "max_attempts": settings.max_attempts},
            user_agent_extra="clusterport",
        ),
    }
    # Without credentials: the service's own identity from the default chain (instance role,
    # IRSA, environment).
    if credentials is not None:
        options["aws_access_key_id"] = credentials.access_key_id
        options["aws_secret_access_key"] = credentials.secret_access_key
        options["aws_session_token"] = credentials.session_token
    return options


def sts_client(region: str, credentials: TemporaryCredentials | None = None) -> STSClient:
    """STS client for `region`, with the service identity unless credentials are given."""
    return _session(credentials).client("sts", **_client_options(region, credentials))


def cloudformation_client(region: str, credentials: TemporaryCredentials) -> CloudFormationClient:
    """CloudFormation client acting with the assumed role's credentials."""
    return _session(credentials).client("cloudformation", **_client_options(region, credentials))
