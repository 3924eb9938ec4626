"""EKS bearer tokens: a presigned STS GetCallerIdentity URL bound to one cluster name."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from app.aws.credentials import TemporaryCredentials

TOKEN_PREFIX = "k8s-aws-v1."  # noqa: S105 (a format prefix, not a secret)
CLUSTER_ID_HEADER = "x-k8s-aws-id"
# EKS accepts a presigned URL for 15 minutes at most; we sign it for one.
TOKEN_LIFETIME = timedelta(seconds=60)


@dataclass(frozen=True, repr=False)
class EksToken:
    """A bearer token for one EKS cluster's API server and when it stops being accepted."""

    token: str
    expires_at: datetime

    def __repr__(self) -> str:
        return f"EksToken(expires_at={self.expires_at.isoformat()})"


def sts_presign_host(region: str) -> str:
    """The regional STS host EKS expects the presigned request to name."""
    return f"sts.{region}.amazonaws.com"


def build_eks_token(
    *, region: str, credentials: TemporaryCredentials, cluster_name: str
) -> EksToken:
    """Sign GetCallerIdentity (GET, query auth) with the cluster name header, as EKS wants.

    This signs locally; nothing is sent. The API server passes the URL to STS to learn who
    the caller is, and the signed `x-k8s-aws-id` header ties the token to this cluster.
    """
    url = f"https://{sts_presign_host(region)}/?Action=GetCallerIdentity&Version=2011-06-15"
    request = AWSRequest(method="GET", url=url, headers={CLUSTER_ID_HEADER: cluster_name})
    signer = SigV4QueryAuth(
        Credentials(
            credentials.access_key_id, credentials.secret_access_key, credentials.session_token
        ),
        "sts",
        region,
        expires=int(TOKEN_LIFETIME.total_seconds()),
    )
    signed_at = datetime.now(UTC)
    signer.add_auth(request)
    presigned = request.url
    if presigned is None:  # AWSRequest.url is typed optional; we always set it
        raise ValueError("presigning produced no URL")
    encoded = base64.urlsafe_b64encode(presigned.encode()).decode().rstrip("=")
    return EksToken(token=TOKEN_PREFIX + encoded, expires_at=signed_at + TOKEN_LIFETIME)


def presigned_url_from_token(token: str) -> str:
    """Decode a token back to its presigned URL (what an authenticator does first)."""
    if not token.startswith(TOKEN_PREFIX):
        raise ValueError("not an EKS token")
    body = token[len(TOKEN_PREFIX) :]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
