"""The CloudFormation template clusterport deploys and the parameters it passes to it."""

from __future__ import annotations

from pathlib import Path

from app.providers.aws.settings import get_eks_settings

TEMPLATE_PATH = Path(__file__).parent / "templates" / "eks_cluster.yaml"

# Stack outputs clusterport reads once the stack is complete.
OUTPUT_ENDPOINT = "ClusterEndpoint"
OUTPUT_CA_DATA = "ClusterCertificateAuthorityData"
OUTPUT_NODE_ROLE = "NodeInstanceRoleArn"


def template_body() -> str:
    """The template text (the configured override, or the one kept in the repository)."""
    return (get_eks_settings().template_path or TEMPLATE_PATH).read_text()


def stack_name(cluster_id: int) -> str:
    """Deterministic stack name for a cluster, so a retried step finds the stack it made."""
    return f"{get_eks_settings().stack_prefix}-cluster-{cluster_id}"


def node_image_parameter(kubernetes_version: str) -> str:
    """SSM parameter naming the EKS optimized Amazon Linux 2023 AMI for this version."""
    return (
        f"/aws/service/eks/optimized-ami/{kubernetes_version}"
        "/amazon-linux-2023/x86_64/standard/recommended/image_id"
    )


def stack_parameters(
    *,
    cluster_name: str,
    kubernetes_version: str,
    service_role_arn: str,
    security_group_id: str,
    vpc_id: str,
    subnet_ids: list[str],
    node_count: int,
    instance_type: str,
    key_name: str,
) -> dict[str, str]:
    """Template parameters for one cluster."""
    return {
        "ClusterName": cluster_name,
        "KubernetesVersion": kubernetes_version,
        "ClusterRoleArn": service_role_arn,
        "ClusterControlPlaneSecurityGroup": security_group_id,
        "VpcId": vpc_id,
        "Subnets": ",".join(subnet_ids),
        "NodeCount": str(node_count),
        "NodeInstanceType": instance_type,
        "KeyName": key_name,
        "NodeImageIdSSMParam": node_image_parameter(kubernetes_version),
    }
