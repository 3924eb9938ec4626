"""STS: assume the customer's provisioning role with its external ID."""

from __future__ import annotations

from app.aws.credentials import TemporaryCredentials, sts_client
from app.aws.errors import translate_errors


def assume_role(
    *,
    role_arn: str,
    external_id: str,
    session_name: str,
    region: str,
    duration_seconds: int = 3600,
) -> TemporaryCredentials:
    """Assume `role_arn` as the service identity and return its temporary credentials."""
    with translate_errors("AssumeRole"):
        response = sts_client(region).assume_role(
            RoleArn=role_arn,
            RoleSessionName=session_name,
            ExternalId=external_id,
            DurationSeconds=duration_seconds,
        )
    creds = response["Credentials"]
    return TemporaryCredentials(
        access_key_id=creds["AccessKeyId"],
        secret_access_key=creds["SecretAccessKey"],
        session_token=creds["SessionToken"],
        expiration=creds["Expiration"],
    )


def caller_arn(region: str, credentials: TemporaryCredentials) -> str:
    """The ARN these credentials act as (GetCallerIdentity)."""
    with translate_errors("GetCallerIdentity"):
        return sts_client(region, credentials).get_caller_identity()["Arn"]
