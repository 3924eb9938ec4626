"""Health rules: is a live object rolled out, still progressing, or failed (and why)?"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class HealthState(enum.StrEnum):
    healthy = "healthy"
    progressing = "progressing"
    failed = "failed"


@dataclass(frozen=True)
class Health:
    state: HealthState
    code: str | None = None  # e.g. progress_deadline_exceeded; None when healthy
    reason: str | None = None  # our own short sentence, never text from the cluster

    @property
    def done(self) -> bool:
        return self.state is not HealthState.progressing


HEALTHY = Health(HealthState.healthy)

# Kinds whose health needs a look at their status after the apply.
WATCHED_KINDS = frozenset(
    {
        "Deployment",
        "StatefulSet",
        "DaemonSet",
        "Job",
        "PersistentVolumeClaim",
        "CustomResourceDefinition",
    }
)


def _progressing(code: str, reason: str) -> Health:
    return Health(HealthState.progressing, code, reason)


def _failed(code: str, reason: str) -> Health:
    return Health(HealthState.failed, code, reason)


def _conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    status = obj.get("status") or {}
    return {str(c.get("type")): c for c in status.get("conditions") or [] if isinstance(c, dict)}


def _observed(obj: dict[str, Any]) -> bool:
    generation = (obj.get("metadata") or {}).get("generation")
    observed = (obj.get("status") or {}).get("observedGeneration")
    return generation is None or (observed is not None and observed >= generation)


def _deployment(obj: dict[str, Any]) -> Health:
    if not _observed(obj):
        return _progressing("not_observed", "the controller has not seen this generation yet")
    progressing = _conditions(obj).get("Progressing")
    if progressing and progressing.get("reason") == "ProgressDeadlineExceeded":
        return _failed("progress_deadline_exceeded", "the rollout exceeded its progress deadline")
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    want = int(spec.get("replicas", 1))
    if int(status.get("updatedReplicas") or 0) < want:
        return _progressing("updating", "waiting for updated replicas")
    if int(status.get("replicas") or 0) > int(status.get("updatedReplicas") or 0):
        return _progressing("terminating_old", "waiting for old replicas to go away")
    if int(status.get("availableReplicas") or 0) < want:
        return _progressing("unavailable", "waiting for replicas to become available")
    return HEALTHY


def _statefulset(obj: dict[str, Any]) -> Health:
    if not _observed(obj):
        return _progressing("not_observed", "the controller has not seen this generation yet")
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    want = int(spec.get("replicas", 1))
    strategy = (spec.get("updateStrategy") or {}).get("type", "RollingUpdate")
    if int(status.get("readyReplicas") or 0) < want:
        return _progressing("unavailable", "waiting for ready replicas")
    if strategy == "RollingUpdate" and status.get("updateRevision") != status.get(
        "currentRevision"
    ):
        return _progressing("updating", "waiting for the rolling update to finish")
    return HEALTHY


def _daemonset(obj: dict[str, Any]) -> Health:
    if not _observed(obj):
        return _progressing("not_observed", "the controller has not seen this generation yet")
    status = obj.get("status") or {}
    desired = int(status.get("desiredNumberScheduled") or 0)
    if int(status.get("updatedNumberScheduled") or 0) < desired:
        return _progressing("updating", "waiting for updated pods")
    if int(status.get("numberAvailable") or 0) < desired:
        return _progressing("unavailable", "waiting for pods to become available")
    return HEALTHY


def _job(obj: dict[str, Any]) -> Health:
    conditions = _conditions(obj)
    if (conditions.get("Failed") or {}).get("status") == "True":
        return _failed("job_failed", "the job failed")
    if (conditions.get("Complete") or {}).get("status") == "True":
        return HEALTHY
    return _progressing("running", "waiting for the job to complete")


def _pvc(obj: dict[str, Any]) -> Health:
    phase = (obj.get("status") or {}).get("phase")
    if phase == "Bound":
        return HEALTHY
    if phase == "Lost":
        return _failed("claim_lost", "the volume claim lost its volume")
    return _progressing("pending", "waiting for the claim to be bound")


def _crd(obj: dict[str, Any]) -> Health:
    conditions = _conditions(obj)
    if (conditions.get("Established") or {}).get("status") == "True":
        return HEALTHY
    if (conditions.get("NamesAccepted") or {}).get("status") == "False":
        return _failed("crd_names_rejected", "the CRD's names conflict with another")
    return _progressing("not_established", "waiting for the CRD to be established")


_RULES = {
    "Deployment": _deployment,
    "StatefulSet": _statefulset,
    "DaemonSet": _daemonset,
    "Job": _job,
    "PersistentVolumeClaim": _pvc,
    "CustomResourceDefinition": _crd,
}


def assess(obj: dict[str, Any] | None) -> Health:
    """The health of a live object (as the API returns it). A missing object is failed."""
    if obj is None:
        return _failed("object_missing", "the object is gone from the cluster")
    rule = _RULES.get(str(obj.get("kind")))
    return rule(obj) if rule else HEALTHY
