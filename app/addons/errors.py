"""Fixed messages for the codes stored on add-ons (never text from the cluster or from helm)."""

from __future__ import annotations

from app.clusters.errors import error_message as cluster_error_message

MESSAGES = {
    # The install pod and its Job.
    "install_pod_not_created": "The install Job created no pod in time (quota, admission?).",
    "install_pod_unschedulable": "No node could run the install pod in time.",
    "installer_image_pull_failed": "The install pod's image (clusterport) could not be pulled.",
    "install_pod_config_error": "The install pod could not be configured (missing Secret?).",
    "install_pod_not_started": "The install pod did not start in time.",
    "install_pod_oom_killed": "The install pod ran out of memory.",
    "install_deadline_exceeded": "The install Job ran past its deadline and was stopped.",
    "install_job_gone": "The install Job was deleted before it finished.",
    # helm's own failures, read from its output.
    "helm_failed": "helm failed; the log tail has its output.",
    "helm_operation_in_progress": "Another helm operation on this release is in progress.",
    "release_name_in_use": "A release of this name exists that helm cannot take over.",
    "values_rejected_by_chart": "The chart's own values schema rejected the values.",
    "chart_not_found": "The chart or its pinned version is not in the chart repository.",
    "chart_repository_unreachable": "The install pod could not fetch the chart.",
    "cluster_unreachable_from_pod": "The install pod could not reach the Kubernetes API.",
    "resource_conflict": "An object the chart creates already exists and is not the release's.",
    "chart_render_failed": "The chart's templates failed to render with these values.",
    "manifest_invalid": "The cluster rejected an object the chart rendered.",
    "helm_wait_timeout": "The release's resources did not become ready in time; it was rolled "
    "back.",
    "release_not_found": "helm found no such release.",
    # Drift and health (status `degraded`).
    "release_missing": "The Helm release is gone from the cluster.",
    "release_not_deployed": "The Helm release's latest revision is not deployed.",
    "chart_version_drift": "The release runs another chart version than the one asked for.",
    "values_drift": "The release's values differ from the ones asked for.",
    "workload_missing": "A Deployment, StatefulSet or DaemonSet of the release is gone.",
    "workload_unavailable": "A Deployment, StatefulSet or DaemonSet of the release is not "
    "available.",
}


def error_message(code: str) -> str:
    return MESSAGES.get(code) or cluster_error_message(code)
