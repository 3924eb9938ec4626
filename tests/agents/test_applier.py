"""The agent's in-cluster applier against a real kube-apiserver (server-side apply, discovery,
CRDs), its error codes beside app/kube's, and the apply stream's check of result lines."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from app.agent.applier import MESSAGES, Applier, ApplyFailure, code_for_status
from app.agent.kube import from_kubeconfig
from app.agent.proxy import KubeProxy
from app.kube.errors import error_for_code, error_for_status
from app.tunnel.apply import check_line
from app.tunnel.frames import ResetCode
from app.tunnel.session import StreamReset
from tests.agents.test_tunnel import tunnel
from tests.support.kubeapi import KubeCluster, unique_name


def test_the_agent_reports_the_same_codes_and_messages_as_app_kube() -> None:
    for status in (302, 400, 401, 403, 404, 409, 410, 418, 422, 429, 500, 502, 503, 504):
        assert code_for_status(status) == error_for_status(status).code, status
    for code, message in MESSAGES.items():
        assert error_for_code(code).code == code
        assert error_for_code(code).message == message


@pytest.fixture
async def applier(kube_cluster: KubeCluster) -> AsyncIterator[Applier]:
    proxy = KubeProxy(from_kubeconfig(kube_cluster.kubeconfig))
    yield Applier(proxy)
    await proxy.close()


@pytest.fixture
def namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    name = unique_name("pull")
    kube_cluster.kubectl("create", "namespace", name)
    yield name
    kube_cluster.kubectl("delete", "namespace", name, "--wait=false")


def _config_map(name: str, namespace: str, value: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"key": value},
    }


async def test_server_side_apply_as_the_field_manager(
    applier: Applier, namespace: str, kube_cluster: KubeCluster
) -> None:
    await applier.apply_one(_config_map("a", namespace, "one"), "clusterport")
    await applier.apply_one(_config_map("a", namespace, "two"), "clusterport")
    live = kube_cluster.kubectl_json(
        "get", "configmap", "a", "-n", namespace, "--show-managed-fields"
    )
    assert live["data"] == {"key": "two"}
    assert [f["manager"] for f in live["metadata"]["managedFields"]] == ["clusterport"]


async def test_refusals_carry_app_kube_codes(applier: Applier, namespace: str) -> None:
    bad_port = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {"ports": [{"port": 99999}]},
    }
    with pytest.raises(ApplyFailure) as refused:
        await applier.apply_one(bad_port, "clusterport")
    assert (refused.value.code, refused.value.status) == ("invalid", 422)

    wrong_type = _config_map("b", namespace, "x")
    wrong_type["data"] = {"key": 1}
    with pytest.raises(ApplyFailure) as typed:
        await applier.apply_one(wrong_type, "clusterport")
    assert (typed.value.code, typed.value.status) == ("invalid", 422)

    unknown = {"apiVersion": "v1", "kind": "Gadget", "metadata": {"name": "g"}}
    with pytest.raises(ApplyFailure) as missing:
        await applier.apply_one(unknown, "clusterport")
    assert missing.value.code == "not_found"


async def test_a_new_crd_is_waited_for_and_its_kind_found(
    applier: Applier, namespace: str, kube_cluster: KubeCluster
) -> None:
    group = f"{unique_name('g')}.example.com"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"gadgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }
    gadget = {
        "apiVersion": f"{group}/v1",
        "kind": "Gadget",
        "metadata": {"name": "g", "namespace": namespace},
    }
    # Looked up before the CRD exists: the group is cached as serving nothing.
    assert await applier.resource(f"{group}/v1", "Gadget") is None
    try:
        await applier.apply_one(crd, "clusterport")
        assert await applier.crds_established([crd], 30)
        await applier.apply_one(gadget, "clusterport")
        live = kube_cluster.kubectl_json("get", f"gadgets.{group}", "g", "-n", namespace)
        assert live["metadata"]["name"] == "g"
    finally:
        kube_cluster.kubectl("delete", "crd", f"gadgets.{group}", "--wait=false")


@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b"[]",
        b'{"result": "applied"}',
        b'{"result": "applied", "ref": {"kind": "ConfigMap"}}',
        b'{"result": "failed", "ref": {"api_version": "v1", "kind": "ConfigMap", '
        b'"namespace": "n", "name": "a"}, "code": "Some Text From A Cluster"}',
        b'{"result": "failed", "ref": {"api_version": "v1", "kind": "ConfigMap", '
        b'"namespace": "n", "name": "a"}, "code": "invalid", "status": 9000}',
        b'{"result": "done", "waiting_for_crds": "yes"}',
        b'{"result": "mystery"}',
    ],
)
def test_the_agent_server_refuses_malformed_result_lines(line: bytes) -> None:
    assert check_line(line) is None


def test_the_agent_server_keeps_only_known_fields() -> None:
    line = (
        b'{"result": "failed", "ref": {"api_version": "v1", "kind": "ConfigMap", '
        b'"namespace": "n", "name": "a", "extra": 1}, "code": "invalid", "status": 422, '
        b'"message": "anything the agent says"}'
    )
    assert check_line(line) == {
        "ref": {"api_version": "v1", "kind": "ConfigMap", "namespace": "n", "name": "a"},
        "result": "failed",
        "code": "invalid",
        "status": 422,
    }
    assert check_line(b'{"result": "done", "waiting_for_crds": false}') == {
        "result": "done",
        "waiting_for_crds": False,
    }


async def test_an_apply_stream_answers_one_line_per_object_and_stops_at_a_refusal(
    applier: Applier, namespace: str, kube_cluster: KubeCluster
) -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {"ports": [{"port": 99999}]},
    }
    later = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "later", "namespace": namespace},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}},
    }
    body = {
        "objects": [later, service, _config_map("a", namespace, "v")],
        "field_manager": "clusterport",
        "wait_crds": 5,
    }
    async with tunnel(applier.handle) as pair:
        stream = await pair.server.open_stream(b'{"kind": "apply"}')
        await stream.write(json.dumps(body).encode(), end=True)
        assert json.loads(await stream.read_headers())["status"] == 200
        data = b""
        while chunk := await stream.read():
            data += chunk
    lines = [json.loads(line) for line in data.splitlines()]
    ref = {"api_version": "v1", "namespace": namespace}
    assert lines == [
        {"ref": {**ref, "kind": "ConfigMap", "name": "a"}, "result": "applied"},
        {
            "ref": {**ref, "kind": "Service", "name": "web"},
            "result": "failed",
            "code": "invalid",
            "status": 422,
            "message": MESSAGES["invalid"],
        },
        {"result": "done", "waiting_for_crds": False},
    ]
    assert [check_line(json.dumps(line).encode()) for line in lines[:1]] == lines[:1]
    gone = kube_cluster.kubectl("get", "poddisruptionbudget", "later", "-n", namespace, check=False)
    assert gone.returncode != 0


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"objects": 5}', b'{"objects": [{"kind": "ConfigMap"}]}'],
)
async def test_a_malformed_apply_request_is_reset(applier: Applier, body: bytes) -> None:
    async with tunnel(applier.handle) as pair:
        stream = await pair.server.open_stream(b'{"kind": "apply"}')
        await stream.write(body, end=True)
        with pytest.raises(StreamReset) as reset:
            await stream.read_headers()
    assert reset.value.code == ResetCode.BAD_REQUEST
