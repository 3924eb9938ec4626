"""Fixed messages for the error codes stored on clusters (never text from the cluster itself)."""

from __future__ import annotations

MESSAGES = {
    "unsafe_url": "The cluster URL resolves to an address that is not allowed.",
    "unresolvable_host": "The cluster's host name does not resolve.",
    "unreachable": "The Kubernetes API could not be reached.",
    "timeout": "The Kubernetes API did not answer in time.",
    "tls_error": "The Kubernetes API's certificate does not match the CA or host name.",
    "unauthorized": "The Kubernetes API rejected the token (401).",
    "forbidden": "The token is not allowed to do this in the cluster (403).",
    "not_found": "An object clusterport expected is missing in the cluster.",
    "conflict": "An object exists in the cluster that clusterport does not own.",
    "invalid": "The cluster rejected an object clusterport sent as invalid.",
    "rate_limited": "The Kubernetes API throttled clusterport's requests (429).",
    "server_error": "The Kubernetes API answered with a server error (5xx).",
    "unexpected_response": "The Kubernetes API answered with a redirect or an unexpected status.",
    "no_credentials": "The cluster has no stored credentials to connect with.",
    "agent_not_connected": "The cluster's agent is not connected to clusterport.",
    "agent_unavailable": "The request could not travel through the cluster's agent "
    "(busy, draining or lost on the way).",
    "tunnel_refused": "The agent server refused clusterport's internal credential "
    "(check that every clusterport process has the same signing keys).",
    "token_not_issued": "The cluster never filled the service account token Secret.",
    "internal_error": "clusterport failed while talking to the cluster.",
    "addon_uninstall_failed": "An add-on could not be uninstalled while deleting the cluster: "
    "read its log, then delete again (or with force=true to leave the cluster as it is).",
    "stalled": "The work on this record could not be completed after several attempts.",
    # Amazon EKS provisioning (AWS error codes are stored as AWS names them).
    "AccessDenied": "AWS refused the request: check the provisioning role's trust policy, "
    "external ID and permissions.",
    "ProvisioningTimeout": "The CloudFormation stack did not finish within the time limit.",
    "StackNotFound": "The CloudFormation stack disappeared during provisioning.",
    "InvalidStackOutputs": "The CloudFormation stack's outputs are not what clusterport needs.",
    "StackOutputsMissing": "The stack finished without the outputs clusterport needs.",
    "InvalidAwsAuthConfigMap": "The aws-auth ConfigMap cannot be parsed; it was left as is.",
    "ServiceAccountTokenTimeout": "The cluster did not issue clusterport's service account token.",
    "ROLLBACK_COMPLETE": "The CloudFormation stack failed and was rolled back.",
    "ROLLBACK_FAILED": "The CloudFormation stack failed and its rollback failed too.",
    "CREATE_FAILED": "The CloudFormation stack could not be created.",
}


def error_message(code: str) -> str:
    return MESSAGES.get(code, f"The last operation failed ({code}).")
