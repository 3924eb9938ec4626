"""Request and response bodies for EKS clusters, with the AWS-specific validation."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from app.aws.regions import eks_regions
from app.clusters.errors import error_message
from app.clusters.models import Cluster, ClusterStatus
from app.clusters.schemas import ErrorInfo
from app.core.validation import DNSLabel, EnvironmentScope
from app.providers.aws.models import EksProvider, Step

_ROLE_ARN = re.compile(r"^arn:aws:iam::\d{12}:role/(?:[\w+=,.@-]+/)*[\w+=,.@-]{1,64}$")
_K8S_VERSION = re.compile(r"^1\.(\d{2})$")
_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]{0,15}\.[a-z0-9-]{1,16}$")
_VPC = re.compile(r"^vpc-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
_SUBNET = re.compile(r"^subnet-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
_SECURITY_GROUP = re.compile(r"^sg-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
_KEY_NAME = re.compile(r"^[\x20-\x7e]{1,255}$")
MIN_KUBERNETES_MINOR = 28


def _matching(pattern: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        # The message names the expected shape and never echoes the value.
        if not pattern.match(value):
            raise ValueError(f"not a valid {what}")
        return value

    return AfterValidator(check)


def _region(value: str) -> str:
    if value not in eks_regions():
        raise ValueError("not an AWS region where EKS is available")
    return value


def _kubernetes_version(value: str) -> str:
    match = _K8S_VERSION.match(value)
    if match is None or int(match.group(1)) < MIN_KUBERNETES_MINOR:
        raise ValueError(f"must be a Kubernetes minor version 1.{MIN_KUBERNETES_MINOR} or newer")
    return value


def _distinct(values: list[str]) -> list[str]:
    if len(set(values)) != len(values):
        raise ValueError("subnets must be distinct")
    return values


Stripped = StringConstraints(strip_whitespace=True, max_length=2048)
RoleArn = Annotated[str, Stripped, _matching(_ROLE_ARN, "IAM role ARN")]
Region = Annotated[str, Stripped, AfterValidator(_region)]
KubernetesVersion = Annotated[str, Stripped, AfterValidator(_kubernetes_version)]
InstanceType = Annotated[str, Stripped, _matching(_INSTANCE_TYPE, "EC2 instance type")]
VpcId = Annotated[str, Stripped, _matching(_VPC, "VPC ID")]
SubnetId = Annotated[str, Stripped, _matching(_SUBNET, "subnet ID")]
SecurityGroupId = Annotated[str, Stripped, _matching(_SECURITY_GROUP, "security group ID")]
KeyName = Annotated[str, _matching(_KEY_NAME, "EC2 key pair name")]


class EksProviderCreate(BaseModel):
    """Where and how to create the EKS cluster."""

    model_config = ConfigDict(extra="forbid")

    role_arn: RoleArn = Field(
        description="Provisioning role in the customer account. Its trust policy must require "
        "the project's external ID (`GET /api/v1/projects/{id}/eks/external-id`); callers "
        "cannot choose another one."
    )
    region: Region
    kubernetes_version: KubernetesVersion = "1.33"
    node_count: int = Field(default=3, ge=1, le=100)
    instance_type: InstanceType = "m5.large"
    key_name: KeyName
    vpc_id: VpcId
    subnet_ids: Annotated[list[SubnetId], AfterValidator(_distinct)] = Field(
        min_length=2, max_length=16, description="At least two, in different availability zones."
    )
    security_group_id: SecurityGroupId
    service_role_arn: RoleArn = Field(description="EKS service role of the control plane.")


class EksClusterCreate(BaseModel):
    """A new cluster that clusterport creates in the customer's AWS account."""

    model_config = ConfigDict(extra="forbid")

    name: DNSLabel = Field(description="Cluster name, also the EKS cluster's name.")
    environment_scope: EnvironmentScope = "*"
    managed: bool = True
    provider: Literal["aws"] = "aws"
    aws: EksProviderCreate


class EksProvisioningRead(BaseModel):
    """Provisioning status: step, timestamps, elapsed time; never any credential."""

    cluster_id: int
    project_id: int
    name: str
    status: ClusterStatus
    step: Step
    error: ErrorInfo | None
    region: str
    role_arn: str
    external_id: str | None = Field(
        description="The external ID the role requires; shown to maintainers only."
    )
    kubernetes_version: str
    node_count: int
    instance_type: str
    stack_name: str | None
    stack_status: str | None
    polls: int
    has_credentials: bool = Field(description="Whether temporary AWS credentials are held now.")
    started_at: datetime
    step_started_at: datetime
    finished_at: datetime | None
    elapsed_seconds: float

    @classmethod
    def of(
        cls,
        cluster: Cluster,
        provider: EksProvider,
        *,
        show_external_id: bool,
        now: datetime | None = None,
    ) -> EksProvisioningRead:
        end = provider.finished_at or now or datetime.now(UTC)
        code = provider.error_code
        return cls(
            cluster_id=cluster.id,
            project_id=cluster.project_id,
            name=cluster.name,
            status=ClusterStatus(cluster.status),
            step=Step(provider.step),
            error=ErrorInfo(code=code, message=error_message(code)) if code else None,
            region=provider.region,
            role_arn=provider.role_arn,
            external_id=provider.external_id if show_external_id else None,
            kubernetes_version=provider.kubernetes_version,
            node_count=provider.node_count,
            instance_type=provider.instance_type,
            stack_name=provider.stack_name,
            stack_status=provider.stack_status,
            polls=provider.polls,
            has_credentials=provider.access_key_id is not None,
            started_at=provider.started_at,
            step_started_at=provider.step_started_at,
            finished_at=provider.finished_at,
            elapsed_seconds=round((end - provider.started_at).total_seconds(), 3),
        )


class ExternalIdRead(BaseModel):
    """The external ID to require in the provisioning role's trust policy."""

    project_id: int
    external_id: str
