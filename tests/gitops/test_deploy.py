"""A push becomes objects in a real cluster: webhook -> worker -> fetch from a loopback git
server -> render -> server-side apply -> inventory, prune, prune guard, rollback, coalescing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.agents.conftest import processes, tls  # noqa: F401 (fixtures of `reach`)
from tests.gitops.conftest import FINISHED, SECRET, Setup, config_map, service
from tests.gitops.webhooks import github_push
from tests.kube.conftest import reach  # noqa: F401 (direct, and through a real agent)
from tests.kube.helpers import agent_metrics_url, metric, wait_for
from tests.support.kubeapi import KubeCluster, unique_name

pytestmark = pytest.mark.usefixtures("allow_local_network", "worker")


def _names(kube_cluster: KubeCluster, kind: str, namespace: str) -> set[str]:
    listing = kube_cluster.kubectl_json(
        "get", kind, "-n", namespace, "-l", "app.kubernetes.io/managed-by=clusterport"
    )
    return {item["metadata"]["name"] for item in listing["items"]}


async def test_push_applies_prunes_and_records_every_object(
    reached_setup: Setup, kube_cluster: KubeCluster
) -> None:
    setup = reached_setup
    cluster = await setup.gitops.project.cluster(setup.env["cluster_id"])
    assert cluster["connection"] == setup.gitops.project.reach.kind  # type: ignore[union-attr]
    setup.repo.write("k8s/config.yaml", config_map("a") + "---\n" + config_map("b"))
    setup.repo.write("k8s/web/service.yaml", service("web"))
    setup.repo.write("README.md", "not a manifest")
    sha, answer = await setup.push()
    assert answer["status"] == "accepted"
    first = await setup.finished(sha)
    assert first["status"] == "succeeded", first
    assert first["trigger"] == "delivery" and first["digest"].startswith("sha256:")
    assert {(o["kind"], o["name"], o["result"], o["health"]) for o in first["objects"]} == {
        ("ConfigMap", "a", "applied", "healthy"),
        ("ConfigMap", "b", "applied", "healthy"),
        ("Service", "web", "applied", "healthy"),
    }
    ns = setup.namespace
    assert _names(kube_cluster, "configmaps", ns) >= {"a", "b"}
    live = kube_cluster.kubectl_json("get", "configmap", "a", "-n", ns, "--show-managed-fields")
    assert any(f["manager"] == "clusterport" for f in live["metadata"]["managedFields"])
    inventory = kube_cluster.kubectl_json(
        "get", "configmap", f"clusterport-inventory-{setup.env['id']}", "-n", ns
    )
    assert {o["name"] for o in json.loads(inventory["data"]["objects"])} == {"a", "b", "web"}

    setup.repo.write("k8s/config.yaml", config_map("a", "changed"))
    sha2, _ = await setup.push(via="gitlab")
    second = await setup.finished(sha2)
    assert second["status"] == "succeeded", second
    assert ("ConfigMap", "b", "prune", "pruned") in {
        (o["kind"], o["name"], o["action"], o["result"]) for o in second["objects"]
    }
    assert "b" not in _names(kube_cluster, "configmaps", ns)
    live = kube_cluster.kubectl_json("get", "configmap", "a", "-n", ns)
    assert live["data"]["key"] == "changed"
    env = (await setup.gitops.api.get(f"{setup.gitops.base}/environments/{setup.env['id']}")).json()
    assert env["inventory_size"] == 2
    reached = setup.gitops.project.reach
    assert reached is not None
    if reached.via_agent:
        # Pull-based: the agent applied both deployments itself, not request by request.
        (agent,) = reached.agents.values()
        streams = await metric(
            agent_metrics_url(agent), "clusterport_agent_gitops_apply_streams_total", outcome="ok"
        )
        assert streams == 2


async def test_bad_input_fails_with_a_code_and_nothing_half_applied(
    setup: Setup, kube_cluster: KubeCluster
) -> None:
    setup.repo.write("k8s/ok.yaml", config_map("ok"))
    setup.repo.write("k8s/bad.yaml", config_map("x") + "---\nkind: [oops\n")
    sha, _ = await setup.push()
    failed = await setup.finished(sha)
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "malformed_yaml"
    assert failed["error"]["message"].startswith("k8s/bad.yaml:")
    assert "ok" not in _names(kube_cluster, "configmaps", setup.namespace)

    setup.repo.write("k8s/bad.yaml", config_map("x", namespace="kube-system"))
    sha, _ = await setup.push()
    refused = await setup.finished(sha)
    assert refused["error"]["code"] == "namespace_not_allowed"

    setup.repo.write(
        "k8s/bad.yaml", "apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: g}\n"
    )
    sha, _ = await setup.push()
    assert (await setup.finished(sha))["error"]["code"] == "unknown_kind"


async def test_a_namespace_prune_waits_for_confirmation(
    reached_setup: Setup, kube_cluster: KubeCluster
) -> None:
    setup = reached_setup
    gitops = setup.gitops
    await gitops.api.patch(
        f"{gitops.base}/environments/{setup.env['id']}", {"allow_cluster_scoped": True}
    )
    extra = unique_name("extra")
    setup.repo.write(
        "k8s/ns.yaml", f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {extra}\n"
    )
    setup.repo.write("k8s/cm.yaml", config_map("keep"))
    sha, _ = await setup.push()
    assert (await setup.finished(sha))["status"] == "succeeded"
    assert kube_cluster.namespace_state(extra) == "active"

    setup.repo.remove("k8s/ns.yaml")
    sha, _ = await setup.push()
    waiting = await setup.finished(sha)
    assert waiting["status"] == "awaiting_confirmation", waiting
    assert "Namespace/" + extra in waiting["prune_guard_reasons"][0]
    assert ("Namespace", extra, "prune_pending") in {
        (o["kind"], o["name"], o["action"]) for o in waiting["objects"]
    }
    assert kube_cluster.namespace_state(extra) == "active"

    response = await gitops.api.post(f"{gitops.base}/deployments/{waiting['id']}/confirm-prune")
    assert response.status_code == 202, response.text
    done = await wait_for(
        lambda: gitops.deployment(waiting["id"]), lambda d: d["status"] == "succeeded", "prune"
    )
    assert ("Namespace", extra, "pruned") in {
        (o["kind"], o["name"], o["result"]) for o in done["objects"]
    }
    assert kube_cluster.namespace_state(extra) in ("terminating", "absent")
    again = await gitops.api.post(f"{gitops.base}/deployments/{waiting['id']}/confirm-prune")
    assert again.status_code == 409


async def test_rollback_restores_the_pinned_manifests_and_locks_the_environment(
    setup: Setup, kube_cluster: KubeCluster
) -> None:
    gitops, ns = setup.gitops, setup.namespace
    setup.repo.write("k8s/cm.yaml", config_map("app", "one"))
    sha1, _ = await setup.push()
    first = await setup.finished(sha1)
    setup.repo.write("k8s/cm.yaml", config_map("app", "two") + "---\n" + config_map("new"))
    sha2, _ = await setup.push()
    assert (await setup.finished(sha2))["status"] == "succeeded"

    response = await gitops.api.post(f"{gitops.base}/deployments/{first['id']}/rollback")
    assert response.status_code == 202, response.text
    rollback = response.json()
    assert rollback["trigger"] == "rollback" and rollback["rollback_of_id"] == first["id"]
    done = await wait_for(
        lambda: gitops.deployment(rollback["id"]),
        lambda d: d["status"] in FINISHED,
        "the rollback",
    )
    assert done["status"] == "succeeded" and done["digest"] == first["digest"]
    assert kube_cluster.kubectl_json("get", "configmap", "app", "-n", ns)["data"]["key"] == "one"
    assert "new" not in _names(kube_cluster, "configmaps", ns)
    env_url = f"{gitops.base}/environments/{setup.env['id']}"
    assert (await gitops.api.get(env_url)).json()["locked"] is True

    setup.repo.write("k8s/cm.yaml", config_map("app", "three"))
    sha3, answer = await setup.push()
    from app.core.db import session_scope
    from app.gitops.models import WebhookDelivery

    def outcome() -> str:
        with session_scope() as session:
            return session.get_one(WebhookDelivery, answer["delivery_id"]).outcome

    async def fetch_outcome() -> str:
        return outcome()

    assert await wait_for(fetch_outcome, lambda o: o != "received", "the delivery") == (
        "environment_locked"
    )
    assert (await gitops.api.post(f"{env_url}/unlock")).json()["locked"] is False
    sync = await gitops.api.post(f"{env_url}/sync", {})
    assert sync.status_code == 202
    synced = await setup.finished(sha3)
    assert synced["trigger"] == "manual" and synced["status"] == "succeeded"
    assert kube_cluster.kubectl_json("get", "configmap", "app", "-n", ns)["data"]["key"] == "three"


async def test_a_burst_of_pushes_ends_in_at_most_two_deployments_of_the_newest_commit(
    setup: Setup, kube_cluster: KubeCluster
) -> None:
    """Fifteen commits pushed at once, then their fifteen deliveries in a burst. The quiet
    period is raised so that a stall of this busy test machine between two deliveries does not
    count as the end of the burst."""
    from app.gitops.settings import get_gitops_settings

    settings = get_gitops_settings()
    saved, settings.coalesce_quiet_ms = settings.coalesce_quiet_ms, 3_000
    try:
        await _burst(setup, kube_cluster)
    finally:
        settings.coalesce_quiet_ms = saved


async def _burst(setup: Setup, kube_cluster: KubeCluster) -> None:
    commits = []
    for index in range(15):
        setup.repo.write("k8s/cm.yaml", config_map("burst", str(index)))
        commits.append(setup.repo.commit(f"change {index}"))
    setup.repo.push()
    deliveries = []
    for sha in commits:
        headers, body = github_push(SECRET, "refs/heads/main", sha)
        response = await setup.gitops.hook(setup.source, headers, body)
        assert response.status_code == 202, response.text
        deliveries.append(response.json()["delivery_id"])
    last = await setup.finished(commits[-1])
    assert last["status"] == "succeeded"
    deployments = await setup.gitops.deployments(setup.env["id"])
    assert 1 <= len(deployments) <= 2, deployments
    live = kube_cluster.kubectl_json("get", "configmap", "burst", "-n", setup.namespace)
    assert live["data"]["key"] == "14"
    from app.core.db import session_scope
    from app.gitops.models import WebhookDelivery

    with session_scope() as session:
        rows = session.query(WebhookDelivery).filter(WebhookDelivery.id.in_(deliveries)).all()
        outcomes = [(r.commit_sha, r.outcome) for r in rows]
    # Every delivery is recorded: folded into a deployment, or found already deployed (the
    # first deployment deploys the branch head, which the last pushes already point at).
    assert len(outcomes) == 15 and {o for _, o in outcomes} <= {"queued", "up_to_date"}, outcomes
    queued = sum(1 for _, o in outcomes if o == "queued")
    assert sum(d["coalesced"] + 1 for d in deployments) == queued, (deployments, outcomes)


async def test_drift_is_detected_and_self_heal_restores_the_applied_objects(
    reached_setup: Setup, kube_cluster: KubeCluster
) -> None:
    setup = reached_setup
    gitops, ns = setup.gitops, setup.namespace
    env_url = f"{gitops.base}/environments/{setup.env['id']}"
    setup.repo.write("k8s/cm.yaml", config_map("kept", "git") + "---\n" + config_map("other"))
    sha, _ = await setup.push()
    assert (await setup.finished(sha))["status"] == "succeeded"

    async def checked(since: str | None) -> dict[str, Any]:
        assert (await gitops.api.post(f"{env_url}/drift-check")).status_code == 202
        response = await wait_for(
            lambda: gitops.api.get(env_url),
            lambda r: r.json()["drift_checked_at"] not in (None, since),
            "a drift check",
        )
        result: dict[str, Any] = response.json()
        return result

    env = await checked(None)
    assert env["sync_status"] == "in_sync" and env["drifted_objects"] == []

    kube_cluster.kubectl("patch", "configmap", "kept", "-n", ns, "-p", '{"data":{"key":"hand"}}')
    kube_cluster.kubectl("delete", "configmap", "other", "-n", ns)
    env = await checked(env["drift_checked_at"])
    assert env["sync_status"] == "drifted"
    assert {o["name"] for o in env["drifted_objects"]} == {"kept", "other"}

    await gitops.api.patch(env_url, {"self_heal": True})
    await checked(env["drift_checked_at"])
    healed = await wait_for(
        lambda: gitops.deployments(setup.env["id"]),
        lambda items: items[-1]["trigger"] == "self_heal" and items[-1]["status"] == "succeeded",
        "the self-heal deployment",
    )
    assert healed[-1]["commit_sha"] == sha
    assert kube_cluster.kubectl_json("get", "configmap", "kept", "-n", ns)["data"]["key"] == "git"
    assert kube_cluster.kubectl("get", "configmap", "other", "-n", ns, check=False).returncode == 0


async def test_a_force_push_to_an_older_commit_deploys_it_and_late_deliveries_deploy_the_head(
    setup: Setup, kube_cluster: KubeCluster
) -> None:
    from tests.support.git_server import git

    gitops, ns = setup.gitops, setup.namespace
    setup.repo.write("k8s/cm.yaml", config_map("app", "one"))
    sha1, _ = await setup.push()
    assert (await setup.finished(sha1))["status"] == "succeeded"
    setup.repo.write("k8s/cm.yaml", config_map("app", "two"))
    sha2, _ = await setup.push()
    assert (await setup.finished(sha2))["status"] == "succeeded"

    git("reset", "-q", "--hard", sha1, cwd=setup.repo.path)
    setup.repo.push(force=True)
    headers, body = github_push(SECRET, "refs/heads/main", sha1, before=sha2, forced=True)
    assert (await gitops.hook(setup.source, headers, body)).status_code == 202
    history = await wait_for(
        lambda: gitops.deployments(setup.env["id"]),
        lambda items: len(items) == 3 and items[-1]["status"] in FINISHED,
        "the force-push deployment",
    )
    assert history[-1]["commit_sha"] == sha1 and history[-1]["status"] == "succeeded"
    assert kube_cluster.kubectl_json("get", "configmap", "app", "-n", ns)["data"]["key"] == "one"

    # The delivery of the second push arrives late (after the force-push): the branch's head
    # is deployed, not the stale commit.
    headers, body = github_push(SECRET, "refs/heads/main", sha2)
    assert (await gitops.hook(setup.source, headers, body)).status_code == 202
    history = await wait_for(
        lambda: gitops.deployments(setup.env["id"]),
        lambda items: len(items) == 4 and items[-1]["status"] in FINISHED,
        "the late delivery's deployment",
    )
    assert history[-1]["commit_sha"] == sha1
    assert kube_cluster.kubectl_json("get", "configmap", "app", "-n", ns)["data"]["key"] == "one"


async def test_poll_fallback_deploys_a_push_whose_webhook_was_lost(
    setup: Setup, kube_cluster: KubeCluster
) -> None:
    from app.core.db import session_scope
    from app.gitops.models import GitSource, WebhookDelivery
    from workers.gitops import poll_source

    def forget_last_poll() -> None:
        with session_scope() as session:
            session.get_one(GitSource, setup.source["id"]).last_polled_at = None

    setup.repo.write("k8s/cm.yaml", config_map("polled", "lost-webhook"))
    sha = setup.repo.commit_and_push()  # no webhook
    poll_source(setup.source["id"])
    polled = await setup.finished(sha)
    assert polled["status"] == "succeeded" and polled["trigger"] == "poll"
    live = kube_cluster.kubectl_json("get", "configmap", "polled", "-n", setup.namespace)
    assert live["data"]["key"] == "lost-webhook"

    # A push whose webhook did arrive is not deployed a second time by the next poll.
    setup.repo.write("k8s/cm.yaml", config_map("polled", "webhook"))
    sha2, _ = await setup.push()
    assert (await setup.finished(sha2))["trigger"] == "delivery"
    forget_last_poll()
    poll_source(setup.source["id"])
    with session_scope() as session:
        outcomes = [
            (d.provider, d.outcome)
            for d in session.query(WebhookDelivery).order_by(WebhookDelivery.id)
        ]
    assert outcomes[-1] == ("poll", "up_to_date")
    assert len(await setup.gitops.deployments(setup.env["id"])) == 2


async def test_an_unreachable_cluster_fails_the_deployment_with_a_code(
    setup: Setup, kube_cluster: KubeCluster
) -> None:
    import socket

    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gitops = setup.gitops
    gone = await gitops.project.add_cluster(
        kube_cluster, url=f"https://127.0.0.1:{port}", environment_scope="gone"
    )
    env = await gitops.environment(setup.source["id"], gone["id"], setup.namespace)
    setup.repo.write("k8s/cm.yaml", config_map("anywhere"))
    sha, _ = await setup.push()

    async def failed() -> dict[str, Any] | None:
        items = await gitops.deployments(env["id"])
        return items[-1] if items and items[-1]["status"] in FINISHED else None

    result = await wait_for(failed, lambda d: d is not None, "the failed deployment")
    assert result["status"] == "failed" and result["error"]["code"] == "unreachable"
    assert result["commit_sha"] == sha
    # The environment on the reachable cluster deployed the same push.
    assert (await setup.finished(sha))["status"] == "succeeded"
