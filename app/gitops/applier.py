"""The worker's applier: the engine's decisions carried out over the network through `app/kube`
(server-side apply as clusterport, CRDs established before what needs them, prune, health)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.gitops_engine.health import WATCHED_KINDS, Health, assess
from app.gitops_engine.manifests import ObjectRef
from app.gitops_engine.order import waves
from app.gitops_engine.policy import ENVIRONMENT_LABEL, MANAGED_BY, MANAGED_BY_LABEL
from app.kube import KubeClient, KubeError

if TYPE_CHECKING:
    from app.clusters.connection import ViaAgentConnection

FIELD_MANAGER = "clusterport"
# How long the agent waits for the first wave's CRDs before the deployment tries again later.
AGENT_CRD_WAIT_SECONDS = 10.0


@dataclass
class ApplyOutcome:
    applied: list[ObjectRef] = field(default_factory=list)
    # Set when the first wave's CRDs are not established yet: apply again a little later.
    waiting_for_crds: bool = False
    failed: ObjectRef | None = None
    error: KubeError | None = None


def discovered_scopes(
    kube: KubeClient, objects: list[dict[str, Any]]
) -> dict[tuple[str, str], bool]:
    """(group, kind) -> namespaced for the kinds the cluster serves among `objects`."""
    scopes: dict[tuple[str, str], bool] = {}
    for api_version in sorted({str(o["apiVersion"]) for o in objects}):
        for kind, resource in kube.objects.resources(api_version).items():
            scopes[(api_version.rpartition("/")[0], kind)] = resource.namespaced
    return scopes


def apply(kube: KubeClient, objects: list[dict[str, Any]]) -> ApplyOutcome:
    """Server-side apply in dependency order; stops at the first refusal. Re-running it is
    harmless (an apply of the same object is a no-op), which is how a wait for CRDs resumes."""
    outcome = ApplyOutcome()
    for index, wave in enumerate(waves(objects)):
        for obj in wave:
            ref = ObjectRef.of(obj)
            try:
                kube.objects.apply(obj, FIELD_MANAGER)
            except KubeError as exc:
                outcome.failed, outcome.error = ref, exc
                return outcome
            outcome.applied.append(ref)
        if index == 0:
            crds = [o for o in wave if o["kind"] == "CustomResourceDefinition"]
            for crd in crds:
                live = kube.objects.get(
                    str(crd["apiVersion"]), "CustomResourceDefinition", "", crd["metadata"]["name"]
                )
                if not assess(live).done:
                    outcome.waiting_for_crds = True
                    return outcome
            for crd in crds:
                spec = crd.get("spec") or {}
                for version in spec.get("versions") or []:
                    kube.objects.forget(f"{spec.get('group')}/{version.get('name')}")
    return outcome


def apply_through_agent(
    connection: ViaAgentConnection, objects: list[dict[str, Any]]
) -> ApplyOutcome:
    """`apply`, carried out by the cluster's agent in-cluster (pull-based): the same order,
    the same wait for CRDs, the same stop at the first refusal. Raises
    `AgentApplyUnsupportedError` when the agent does not offer it."""
    result = connection.apply_in_cluster(objects, FIELD_MANAGER, AGENT_CRD_WAIT_SECONDS)
    outcome = ApplyOutcome(waiting_for_crds=result.waiting_for_crds)
    for item in result.objects:
        ref = ObjectRef.from_dict(item.ref)
        if item.error is not None:
            outcome.failed, outcome.error = ref, item.error
            break
        outcome.applied.append(ref)
    return outcome


def prune(
    kube: KubeClient, refs: list[ObjectRef]
) -> tuple[list[ObjectRef], ObjectRef | None, KubeError | None]:
    """Delete `refs` (already in reverse dependency order). Returns the deleted (or already
    gone) ones, and the first that failed with its error."""
    done: list[ObjectRef] = []
    for ref in refs:
        try:
            kube.objects.delete(ref.api_version, ref.kind, ref.namespace, ref.name)
        except KubeError as exc:
            return done, ref, exc
        done.append(ref)
    return done, None, None


def inventory_name(environment_id: int) -> str:
    return f"clusterport-inventory-{environment_id}"


def write_inventory(
    kube: KubeClient, namespace: str, environment_id: int, refs: list[ObjectRef]
) -> None:
    """The cluster's copy of the inventory: a ConfigMap in the target namespace."""
    kube.objects.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": inventory_name(environment_id),
                "namespace": namespace,
                "labels": {MANAGED_BY_LABEL: MANAGED_BY, ENVIRONMENT_LABEL: str(environment_id)},
            },
            "data": {"objects": json.dumps([r.to_dict() for r in sorted(refs)])},
        },
        FIELD_MANAGER,
    )


def read_inventory(kube: KubeClient, namespace: str, environment_id: int) -> list[ObjectRef] | None:
    live = kube.objects.get("v1", "ConfigMap", namespace, inventory_name(environment_id))
    if live is None:
        return None
    try:
        return [ObjectRef.from_dict(d) for d in json.loads((live.get("data") or {})["objects"])]
    except (KeyError, ValueError, TypeError):
        return None


def health(kube: KubeClient, refs: list[ObjectRef]) -> dict[ObjectRef, Health]:
    """The health of the watched kinds among `refs` (others are healthy once applied)."""
    return {
        ref: assess(kube.objects.get(ref.api_version, ref.kind, ref.namespace, ref.name))
        for ref in refs
        if ref.kind in WATCHED_KINDS
    }
