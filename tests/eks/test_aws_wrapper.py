"""The boto3 wrapper against a real moto server: assume role, stacks, EKS tokens, errors."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import yaml

from app.aws import cloudformation, sts
from app.aws.cloudformation import StackPhase
from app.aws.credentials import TemporaryCredentials
from app.aws.eks_token import build_eks_token, presigned_url_from_token
from app.aws.errors import (
    AwsAccessDeniedError,
    AwsNotFoundError,
    AwsUnavailableError,
    AwsValidationError,
)
from app.aws.settings import get_aws_settings
from tests.support.moto_server import MotoServer
from tests.support.sigv4 import presigned_signature_matches

ROLE_ARN = "arn:aws:iam::111122223333:role/clusterport-provisioning"
REGION = "eu-west-1"
TEMPLATES = Path(__file__).parent / "templates"
REAL_TEMPLATE = (
    Path(__file__).parents[2] / "app" / "providers" / "aws" / "templates" / "eks_cluster.yaml"
)


def _assume() -> TemporaryCredentials:
    return sts.assume_role(
        role_arn=ROLE_ARN,
        external_id="ext-123",
        session_name="clusterport-cluster-7",
        region=REGION,
    )


def _stand_in_template() -> str:
    return (
        (TEMPLATES / "stand_in_cluster.yaml")
        .read_text()
        .replace("__ENDPOINT__", "https://127.0.0.1:6443")
        .replace("__CA_DATA__", "Q0EgZGF0YQ==")
    )


PARAMETERS = {
    "ClusterName": "cp-7",
    "KubernetesVersion": "1.33",
    "ClusterRoleArn": "arn:aws:iam::111122223333:role/eks-service",
    "ClusterControlPlaneSecurityGroup": "sg-0123456789abcdef0",
    "VpcId": "vpc-0123456789abcdef0",
    "Subnets": "subnet-0123456789abcdef0,subnet-0123456789abcdef1",
    "NodeCount": "3",
    "NodeInstanceType": "m5.large",
    "KeyName": "ops",
    "NodeImageIdSSMParam": (
        "/aws/service/eks/optimized-ami/1.33/amazon-linux-2023/x86_64/standard/recommended/image_id"
    ),
}


def _parameters_of(path: Path) -> set[str]:
    # The Parameters section has no short-form intrinsics (!Ref ...), so it is cut out and
    # read with the safe loader.
    text = path.read_text()
    section = text[text.index("Parameters:") : text.index("Resources:")]
    document: dict[str, dict[str, object]] = yaml.safe_load(section)
    return set(document["Parameters"])


def test_stand_in_template_takes_the_real_templates_parameters() -> None:
    assert _parameters_of(TEMPLATES / "stand_in_cluster.yaml") == _parameters_of(REAL_TEMPLATE)


def test_assume_role_returns_credentials_that_act_as_the_role(moto: MotoServer) -> None:
    creds = _assume()

    assert creds.expiration > datetime.now(UTC) + timedelta(minutes=50)
    assert creds.access_key_id not in repr(creds)
    assert creds.secret_access_key not in repr(creds)
    assert sts.caller_arn(REGION, creds) == (
        "arn:aws:sts::111122223333:assumed-role/clusterport-provisioning/clusterport-cluster-7"
    )


def test_create_stack_twice_makes_one_stack(moto: MotoServer) -> None:
    creds = _assume()
    first = cloudformation.create_stack(
        region=REGION,
        credentials=creds,
        name="clusterport-7",
        template_body=_stand_in_template(),
        parameters=PARAMETERS,
        tags={"clusterport:cluster": "7"},
    )
    second = cloudformation.create_stack(
        region=REGION,
        credentials=creds,
        name="clusterport-7",
        template_body=_stand_in_template(),
        parameters=PARAMETERS,
    )

    assert first == second
    assert moto.stack_names() == ["clusterport-7"]
    state = cloudformation.describe_stack(region=REGION, credentials=creds, name="clusterport-7")
    assert state.stack_id == first
    assert state.phase is StackPhase.COMPLETE
    assert state.outputs["ClusterEndpoint"] == "https://127.0.0.1:6443"
    assert state.outputs["ClusterName"] == "cp-7"
    assert re.fullmatch(r"arn:aws:iam::111122223333:role/.+", state.outputs["NodeInstanceRoleArn"])


@pytest.mark.parametrize(
    ("status", "phase"),
    [
        ("CREATE_IN_PROGRESS", StackPhase.IN_PROGRESS),
        ("ROLLBACK_COMPLETE", StackPhase.FAILED),
        ("ROLLBACK_IN_PROGRESS", StackPhase.FAILED),
        ("CREATE_FAILED", StackPhase.FAILED),
    ],
)
def test_stack_phase_follows_the_status(moto: MotoServer, status: str, phase: StackPhase) -> None:
    creds = _assume()
    cloudformation.create_stack(
        region=REGION,
        credentials=creds,
        name="clusterport-8",
        template_body=_stand_in_template(),
        parameters=PARAMETERS,
    )
    moto.set_stack_status("clusterport-8", status)

    state = cloudformation.describe_stack(region=REGION, credentials=creds, name="clusterport-8")

    assert state.status == status
    assert state.phase is phase


def test_missing_and_deleted_stacks_are_not_found(moto: MotoServer) -> None:
    creds = _assume()
    with pytest.raises(AwsNotFoundError) as missing:
        cloudformation.describe_stack(region=REGION, credentials=creds, name="clusterport-404")
    assert missing.value.code == "StackNotFound"
    assert "does not exist" not in str(missing.value)

    cloudformation.create_stack(
        region=REGION,
        credentials=creds,
        name="clusterport-9",
        template_body=_stand_in_template(),
        parameters=PARAMETERS,
    )
    cloudformation.delete_stack(region=REGION, credentials=creds, name="clusterport-9")
    cloudformation.delete_stack(region=REGION, credentials=creds, name="clusterport-9")

    assert moto.stack_names() == []


def test_bad_template_is_a_validation_error_without_aws_text(moto: MotoServer) -> None:
    creds = _assume()
    with pytest.raises(AwsValidationError) as error:
        cloudformation.create_stack(
            region=REGION,
            credentials=creds,
            name="clusterport-10",
            template_body=_stand_in_template(),
            parameters={"ClusterName": "only-one"},
        )
    assert error.value.code == "ValidationError"
    assert str(error.value) == "AWS CreateStack failed with ValidationError"


def test_assume_role_without_permission_is_access_denied(moto: MotoServer) -> None:
    # clusterport's identity is an IAM user with no policy allowing sts:AssumeRole.
    iam = boto3.client("iam", endpoint_url=moto.endpoint_url, region_name="us-east-1")
    iam.create_user(UserName="clusterport-without-rights")
    key = iam.create_access_key(UserName="clusterport-without-rights")["AccessKey"]
    moto.set_iam_enforced(True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        patch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        with pytest.raises(AwsAccessDeniedError) as error:
            _assume()

    assert error.value.code == "AccessDenied"
    assert error.value.__cause__ is not None


def test_unreachable_endpoint_is_retryable(moto: MotoServer) -> None:
    with pytest.MonkeyPatch.context() as patch:
        # A loopback port nobody listens on: connection refused at once.
        patch.setenv("CLUSTERPORT_AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        patch.setenv("CLUSTERPORT_AWS_MAX_ATTEMPTS", "1")
        get_aws_settings.cache_clear()
        try:
            with pytest.raises(AwsUnavailableError) as error:
                _assume()
        finally:
            get_aws_settings.cache_clear()

    assert error.value.code == "EndpointUnreachable"
    assert error.value.retryable


def test_eks_token_is_a_presigned_get_caller_identity_for_the_cluster(moto: MotoServer) -> None:
    creds = _assume()
    eks_token = build_eks_token(region=REGION, credentials=creds, cluster_name="cp-7")

    assert eks_token.token.startswith("k8s-aws-v1.")
    assert "=" not in eks_token.token
    assert eks_token.expires_at <= datetime.now(UTC) + timedelta(seconds=60)
    url = urlsplit(presigned_url_from_token(eks_token.token))
    query = {key: values[0] for key, values in parse_qs(url.query).items()}
    assert (url.scheme, url.netloc) == ("https", "sts.eu-west-1.amazonaws.com")
    assert query["Action"] == "GetCallerIdentity"
    assert query["X-Amz-Expires"] == "60"
    assert query["X-Amz-SignedHeaders"] == "host;x-k8s-aws-id"
    assert query["X-Amz-Credential"].startswith(f"{creds.access_key_id}/")
    assert "/eu-west-1/sts/aws4_request" in query["X-Amz-Credential"]
    assert query["X-Amz-Security-Token"] == creds.session_token

    # The signature covers the cluster name header: change the name and it no longer matches.
    presigned = presigned_url_from_token(eks_token.token)
    secret = creds.secret_access_key
    assert presigned_signature_matches(presigned, {"x-k8s-aws-id": "cp-7"}, secret)
    assert not presigned_signature_matches(presigned, {"x-k8s-aws-id": "cp-8"}, secret)
