"""The pure engine: parsing with file and line, policy, order, plan with the prune guard, health."""

from __future__ import annotations

from typing import Any

import pytest

from app.gitops_engine.health import HealthState, assess
from app.gitops_engine.manifests import ManifestError, ObjectRef, digest, parse_documents
from app.gitops_engine.order import waves
from app.gitops_engine.plan import make_plan
from app.gitops_engine.policy import ENVIRONMENT_LABEL, Target, prepare

CONFIG = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  k: v\n"


def test_multi_document_files_parse_in_order_and_skip_empty_documents() -> None:
    text = "---\n" + CONFIG.format(name="a") + "---\n---\n" + CONFIG.format(name="b")
    objects = parse_documents([("k8s/a.yaml", text), ("k8s/c.yaml", CONFIG.format(name="c"))])
    assert [o["metadata"]["name"] for o in objects] == ["a", "b", "c"]


def test_a_list_expands_into_its_items() -> None:
    text = "apiVersion: v1\nkind: List\nitems:\n- " + CONFIG.format(name="x").replace("\n", "\n  ")
    assert [o["metadata"]["name"] for o in parse_documents([("l.yaml", text)])] == ["x"]


def test_malformed_yaml_names_file_and_line() -> None:
    text = CONFIG.format(name="a") + "---\napiVersion: v1\nkind: [unclosed\n"
    with pytest.raises(ManifestError) as info:
        parse_documents([("apps/bad.yaml", text)])
    assert info.value.code == "malformed_yaml"
    assert info.value.message.startswith("apps/bad.yaml:")
    line = int(info.value.message.split(":")[1])
    assert line >= 8


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("- a\n- b\n", "not_an_object"),
        ("kind: ConfigMap\nmetadata: {name: a}\n", "missing_api_version"),
        ("apiVersion: v1\nmetadata: {name: a}\n", "missing_kind"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n", "missing_name"),
    ],
)
def test_documents_that_are_not_objects_are_refused_with_a_code(text: str, code: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_documents([("x.yaml", "# comment\n" + text)])
    assert info.value.code == code
    assert info.value.message.startswith("x.yaml:2:")


def _obj(kind: str, name: str, api: str = "v1", **meta: Any) -> dict[str, Any]:
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name, **meta}}


def test_prepare_fills_the_namespace_and_labels_and_refuses_other_namespaces() -> None:
    target = Target(namespace="shop", environment_id=7)
    prepared = prepare([_obj("ConfigMap", "a")], target)
    meta = prepared.objects[0]["metadata"]
    assert meta["namespace"] == "shop"
    assert meta["labels"][ENVIRONMENT_LABEL] == "7"
    with pytest.raises(ManifestError) as info:
        prepare([_obj("ConfigMap", "a", namespace="kube-system")], target)
    assert info.value.code == "namespace_not_allowed"
    allowed = Target(namespace="shop", environment_id=7, extra_namespaces=("kube-system",))
    assert prepare([_obj("ConfigMap", "a", namespace="kube-system")], allowed).refs[0].namespace


def test_cluster_scoped_kinds_need_permission_and_unknown_kinds_are_refused() -> None:
    target = Target(namespace="shop", environment_id=1)
    with pytest.raises(ManifestError) as info:
        prepare([_obj("Namespace", "shop")], target)
    assert info.value.code == "cluster_scoped_not_allowed"
    with pytest.raises(ManifestError) as info:
        prepare([_obj("Widget", "w", api="example.com/v1")], target)
    assert info.value.code == "unknown_kind"
    discovered = {("example.com", "Widget"): True}
    assert prepare([_obj("Widget", "w", api="example.com/v1")], target, discovered).refs == [
        ObjectRef("example.com/v1", "Widget", "shop", "w")
    ]


def test_a_kind_defined_by_a_crd_in_the_same_render_is_known() -> None:
    crd = _obj("CustomResourceDefinition", "widgets.example.com", api="apiextensions.k8s.io/v1")
    crd["spec"] = {"group": "example.com", "names": {"kind": "Widget"}, "scope": "Namespaced"}
    target = Target(namespace="shop", environment_id=1, allow_cluster_scoped=True)
    prepared = prepare([_obj("Widget", "w", api="example.com/v1"), crd], target)
    assert len(prepared.objects) == 2


def test_duplicates_are_refused() -> None:
    with pytest.raises(ManifestError) as info:
        prepare([_obj("ConfigMap", "a"), _obj("ConfigMap", "a")], Target("shop", 1))
    assert info.value.code == "duplicate_object"


def test_order_puts_namespaces_and_crds_in_a_first_wave_then_rbac_config_workloads() -> None:
    objects = [
        _obj("Deployment", "d", api="apps/v1"),
        _obj("Widget", "w", api="example.com/v1"),
        _obj("Service", "s"),
        _obj("ConfigMap", "c"),
        _obj("RoleBinding", "rb", api="rbac.authorization.k8s.io/v1"),
        _obj("CustomResourceDefinition", "x", api="apiextensions.k8s.io/v1"),
        _obj("Namespace", "n"),
    ]
    first, rest = waves(objects)
    assert [o["kind"] for o in first] == ["CustomResourceDefinition", "Namespace"]
    assert [o["kind"] for o in rest] == [
        "RoleBinding",
        "ConfigMap",
        "Service",
        "Deployment",
        "Widget",
    ]


def _refs(*names: str, kind: str = "ConfigMap") -> list[ObjectRef]:
    return [ObjectRef("v1", kind, "shop", n) for n in names]


def test_plan_prunes_what_left_git_and_keeps_pending_prunes_in_the_inventory() -> None:
    plan = make_plan(_refs("a", "b"), _refs("a", "b", "c"), prune=True)
    assert plan.prune == _refs("c") and not plan.needs_confirmation
    assert plan.inventory_after(pruned=True) == _refs("a", "b")
    assert plan.inventory_after(pruned=False) == _refs("a", "b", "c")
    assert make_plan(_refs("a"), _refs("a", "c"), prune=False).prune == []


def test_prune_guard_namespaces_crds_and_large_shares() -> None:
    namespace = ObjectRef("v1", "Namespace", "", "old")
    plan = make_plan(_refs("a"), [*_refs("a"), namespace], prune=True, max_prune_share=0.9)
    assert plan.needs_confirmation and "Namespace/old" in plan.guard_reasons[0]
    share = make_plan(_refs("a"), _refs("a", "b", "c"), prune=True, max_prune_share=0.5)
    assert share.needs_confirmation and "2 of 3" in share.guard_reasons[0]
    confirmed = make_plan(_refs("a"), _refs("a", "b", "c"), prune=True, confirmed=True)
    assert not confirmed.needs_confirmation and len(confirmed.prune) == 2


def _deployment(status: dict[str, Any], generation: int = 2, **spec: Any) -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {"generation": generation},
        "spec": {"replicas": 2, **spec},
        "status": {"observedGeneration": 2, **status},
    }


def test_deployment_health_rules() -> None:
    ready = {"replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}
    assert assess(_deployment(ready)).state is HealthState.healthy
    assert assess(_deployment(ready, generation=3)).code == "not_observed"
    assert assess(_deployment({"updatedReplicas": 1})).code == "updating"
    stuck = {"conditions": [{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}]}
    failed = assess(_deployment(stuck))
    assert failed.state is HealthState.failed and failed.code == "progress_deadline_exceeded"


def test_job_pvc_crd_and_missing_objects() -> None:
    job = {"kind": "Job", "status": {"conditions": [{"type": "Failed", "status": "True"}]}}
    assert assess(job).code == "job_failed"
    assert assess({"kind": "PersistentVolumeClaim", "status": {"phase": "Bound"}}).done
    assert not assess({"kind": "PersistentVolumeClaim", "status": {"phase": "Pending"}}).done
    crd = {"kind": "CustomResourceDefinition", "status": {"conditions": []}}
    assert assess(crd).code == "not_established"
    assert assess(None).code == "object_missing"
    assert assess({"kind": "ConfigMap"}).state is HealthState.healthy


def test_digest_is_stable_under_key_order() -> None:
    assert digest([{"a": 1, "b": 2}]) == digest([{"b": 2, "a": 1}])
    assert digest([{"a": 1}]) != digest([{"a": 2}])


def test_drift_ignores_what_the_server_adds_but_not_what_it_changes() -> None:
    from app.gitops_engine.drift import is_drifted

    desired = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "labels": {"a": "b"}},
        "spec": {"ports": [{"port": 80}]},
    }
    live = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "labels": {"a": "b"}, "uid": "x", "resourceVersion": "9"},
        "spec": {"ports": [{"port": 80, "protocol": "TCP"}], "clusterIP": "10.0.0.1"},
        "status": {},
    }
    assert not is_drifted(desired, live)
    assert is_drifted(desired, None)
    live["spec"]["ports"] = [{"port": 81, "protocol": "TCP"}]  # type: ignore[index]
    assert is_drifted(desired, live)
    live["spec"]["ports"] = [{"port": 80}, {"port": 443}]  # type: ignore[index]
    assert is_drifted(desired, live)
