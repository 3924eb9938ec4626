"""The Kubernetes side of add-ons: install Jobs and what they need, their state and log, and
the release's health. Workers only (through the client the worker got for the cluster).
"""

from __future__ import annotations

from typing import Any

import structlog

from app.addons import helm
from app.addons.helm import NAMESPACE, InstallSpec, JobState
from app.kube import KubeClient
from app.kube.errors import KubeConflictError, KubeError, KubeNotFoundError

log = structlog.get_logger(__name__)

LOG_TAIL_LINES = 500
LOG_LIMIT_BYTES = 256 * 1024


def _create_or_keep(create: Any, *args: Any) -> None:
    try:
        create(*args)
    except KubeConflictError:
        pass


def _ensure_binding(kube: KubeClient, spec: InstallSpec) -> None:
    body = helm.cluster_role_binding(spec)
    try:
        existing = kube.rbac.read_cluster_role_binding(spec.binding_name)
    except KubeNotFoundError:
        _create_or_keep(kube.rbac.create_cluster_role_binding, body)
        return
    if existing.role_ref.name != spec.cluster_role:
        # roleRef cannot change in place.
        kube.rbac.delete_cluster_role_binding(spec.binding_name)
        _create_or_keep(kube.rbac.create_cluster_role_binding, body)


def _ensure_values(kube: KubeClient, spec: InstallSpec) -> None:
    body = helm.values_secret(spec)
    try:
        kube.core.create_namespaced_secret(NAMESPACE, body)
    except KubeConflictError:
        kube.core.replace_namespaced_secret(spec.values_secret, NAMESPACE, body)


def prepare(kube: KubeClient, spec: InstallSpec) -> None:
    """The managed namespace, the install service account and its binding, the values Secret."""
    _create_or_keep(
        kube.core.create_namespace,
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
    )
    _create_or_keep(
        kube.core.create_namespaced_service_account, NAMESPACE, helm.service_account(spec)
    )
    _ensure_binding(kube, spec)
    if not spec.uninstall:
        _ensure_values(kube, spec)


def start_job(kube: KubeClient, spec: InstallSpec) -> bool:
    """Create this operation's Job; True once it exists. A Job of the same name left by an
    earlier operation is deleted first (False: call again shortly)."""
    try:
        kube.batch.create_namespaced_job(NAMESPACE, helm.job(spec))
        return True
    except KubeConflictError:
        pass
    try:
        existing = kube.batch.read_namespaced_job(spec.job_name, NAMESPACE)
    except KubeNotFoundError:
        return False  # deleted meanwhile: create it on the next run
    annotations = existing.metadata.annotations or {}
    if annotations.get(helm.OPERATION_ANNOTATION) == spec.operation_key:
        return True  # created by an earlier run of this same operation
    if existing.metadata.deletion_timestamp is None:
        delete_job(kube, spec)
    return False


def delete_job(kube: KubeClient, spec: InstallSpec) -> None:
    try:
        kube.batch.delete_namespaced_job(
            spec.job_name, NAMESPACE, body={"propagationPolicy": "Background"}
        )
    except KubeNotFoundError:
        pass


def _condition(conditions: Any, kind: str) -> Any | None:
    for condition in conditions or []:
        if condition.type == kind and condition.status == "True":
            return condition
    return None


def job_state(kube: KubeClient, spec: InstallSpec) -> JobState | None:
    """The Job's and its pod's state; None when the Job is gone."""
    try:
        found = kube.batch.read_namespaced_job(spec.job_name, NAMESPACE)
    except KubeNotFoundError:
        return None
    annotations = found.metadata.annotations or {}
    if annotations.get(helm.OPERATION_ANNOTATION) != spec.operation_key:
        return None  # another operation's Job: ours is gone
    status = found.status
    conditions = status.conditions if status is not None else None
    failed = _condition(conditions, "Failed")
    succeeded = bool(
        _condition(conditions, "Complete") or (status is not None and (status.succeeded or 0) > 0)
    )
    pods = kube.core.list_namespaced_pod(
        NAMESPACE, label_selector=f"batch.kubernetes.io/controller-uid={found.metadata.uid}"
    ).items
    state = JobState(
        succeeded=succeeded and failed is None,
        failed=failed is not None,
        failed_reason=failed.reason if failed is not None else None,
    )
    if not pods:
        return state
    pod = max(pods, key=lambda p: p.metadata.creation_timestamp)
    pod_status = pod.status
    scheduled = _condition_false(pod_status.conditions if pod_status else None, "PodScheduled")
    container = (pod_status.container_statuses or [None])[0] if pod_status else None
    waiting = container.state.waiting if container is not None and container.state else None
    terminated = container.state.terminated if container is not None and container.state else None
    running = container.state.running if container is not None and container.state else None
    phase = pod_status.phase if pod_status else None
    return JobState(
        succeeded=state.succeeded,
        failed=state.failed,
        failed_reason=state.failed_reason,
        pod_name=pod.metadata.name,
        pod_started=bool(running or terminated or phase in ("Running", "Succeeded", "Failed")),
        unschedulable=scheduled is not None and scheduled.reason == "Unschedulable",
        waiting_reason=waiting.reason if waiting is not None else None,
        terminated_reason=terminated.reason if terminated is not None else None,
    )


def _condition_false(conditions: Any, kind: str) -> Any | None:
    for condition in conditions or []:
        if condition.type == kind and condition.status == "False":
            return condition
    return None


def pod_log(kube: KubeClient, pod_name: str) -> str | None:
    """The pod's log with a timestamp on each line; None when it could not be read.

    Best effort: the API server fetches logs from the node's kubelet, a hop that fails on its
    own (5xx) while the pod starts or ends; the stored tail then stays as it was."""
    try:
        text = kube.core.read_namespaced_pod_log(
            pod_name,
            NAMESPACE,
            timestamps=True,
            tail_lines=LOG_TAIL_LINES,
            limit_bytes=LOG_LIMIT_BYTES,
        )
    except KubeError as exc:
        # Gone, not started yet (400), or the kubelet hop failed.
        log.info("addon_pod_log_unreadable", pod=pod_name, code=exc.code)
        return None
    return text if isinstance(text, str) else None


def clean_up(kube: KubeClient, spec: InstallSpec) -> None:
    """After an uninstall: the values Secret, the binding and the service account go too."""
    for delete, args in (
        (kube.core.delete_namespaced_secret, (spec.values_secret, NAMESPACE)),
        (kube.rbac.delete_cluster_role_binding, (spec.binding_name,)),
        (kube.core.delete_namespaced_service_account, (spec.service_account, NAMESPACE)),
    ):
        try:
            delete(*args)
        except KubeNotFoundError:
            pass


def latest_release(kube: KubeClient, release: str, namespace: str) -> dict[str, Any] | None:
    """The newest revision helm recorded for the release (its Secret), decoded."""
    secrets = kube.core.list_namespaced_secret(
        namespace, label_selector=f"owner=helm,name={release}"
    ).items

    def revision(secret: Any) -> int:
        value = (secret.metadata.labels or {}).get("version", "0")
        return int(value) if value.isdigit() else 0

    if not secrets:
        return None
    newest = max(secrets, key=revision)
    data = (newest.data or {}).get("release")
    return helm.decode_release(data) if isinstance(data, str) else None


def _available(kube: KubeClient, kind: str, namespace: str, name: str) -> bool:
    if kind == "Deployment":
        d = kube.apps.read_namespaced_deployment_status(name, namespace)
        wanted = d.spec.replicas if d.spec.replicas is not None else 1
        return (d.status.available_replicas or 0) >= wanted
    if kind == "StatefulSet":
        s = kube.apps.read_namespaced_stateful_set_status(name, namespace)
        wanted = s.spec.replicas if s.spec.replicas is not None else 1
        return (s.status.ready_replicas or 0) >= wanted
    ds = kube.apps.read_namespaced_daemon_set_status(name, namespace)
    return (ds.status.number_unavailable or 0) == 0


def health_code(
    kube: KubeClient, release: str, namespace: str, version: str, values: dict[str, Any]
) -> str | None:
    """None when the release is deployed as asked and its workloads are available; else why."""
    found = latest_release(kube, release, namespace)
    code = helm.drift_code(found, version, values)
    if code is not None or found is None:
        return code
    for kind, workload_namespace, name in helm.release_workloads(found, namespace):
        try:
            if not _available(kube, kind, workload_namespace, name):
                return "workload_unavailable"
        except KubeNotFoundError:
            return "workload_missing"
    return None


__all__ = ["KubeError", "clean_up", "health_code", "job_state", "pod_log", "prepare", "start_job"]
