"""Health and ordering against the real cluster: a rollout that cannot progress fails with
`progress_deadline_exceeded` or times out; CRDs are established before their objects; progress
streams as Server-Sent Events and `clusterport deployments watch` draws it."""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import pytest

from tests.gitops.conftest import GitOps, Setup, config_map
from tests.kube.helpers import wait_for
from tests.support.kubeapi import KubeCluster, unique_name

pytestmark = pytest.mark.usefixtures("allow_local_network", "worker")


def deployment(name: str, *, progress_deadline: int | None = None) -> str:
    deadline = f"\n  progressDeadlineSeconds: {progress_deadline}" if progress_deadline else ""
    return f"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: 2{deadline}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      # No node will ever run this pod: the rollout cannot make progress.
      nodeSelector: {{clusterport.dev/never: "true"}}
      containers:
      - name: web
        image: registry.example.invalid/web:1
"""


async def test_a_rollout_past_its_progress_deadline_fails_with_the_object_and_code(
    setup: Setup,
) -> None:
    setup.repo.write("k8s/app.yaml", deployment("stuck", progress_deadline=1))
    setup.repo.write("k8s/cm.yaml", config_map("settings"))
    sha, _ = await setup.push()
    failed = await setup.finished(sha)
    assert failed["status"] == "failed", failed
    assert failed["error"]["code"] == "progress_deadline_exceeded"
    assert failed["error"]["object"] == f"Deployment/{setup.namespace}/stuck"
    states = {(o["kind"], o["health"]) for o in failed["objects"]}
    assert ("Deployment", "failed") in states and ("ConfigMap", "healthy") in states


async def test_a_rollout_that_never_finishes_times_out(setup: Setup) -> None:
    gitops = setup.gitops
    await gitops.api.patch(
        f"{gitops.base}/environments/{setup.env['id']}", {"health_timeout_seconds": 5}
    )
    setup.repo.write("k8s/app.yaml", deployment("slow"))
    sha, _ = await setup.push()
    timed_out = await setup.finished(sha)
    assert timed_out["status"] == "timed_out", timed_out
    assert timed_out["error"]["code"] == "health_timeout"
    assert timed_out["error"]["object"] == f"Deployment/{setup.namespace}/slow"


def crd(group: str) -> str:
    return f"""apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.{group}
spec:
  group: {group}
  scope: Namespaced
  names: {{plural: widgets, singular: widget, kind: Widget}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"""


async def test_a_crd_is_established_before_its_objects_are_applied(
    setup: Setup, kube_cluster: KubeCluster
) -> None:
    gitops = setup.gitops
    await gitops.api.patch(
        f"{gitops.base}/environments/{setup.env['id']}", {"allow_cluster_scoped": True}
    )
    group = f"{unique_name('g')}.example.com"
    # The custom resource sorts first by file name: order comes from the engine, not the files.
    setup.repo.write(
        "k8s/a-widget.yaml",
        f"apiVersion: {group}/v1\nkind: Widget\nmetadata:\n  name: w1\nsize: 3\n",
    )
    setup.repo.write("k8s/z-crd.yaml", crd(group))
    sha, _ = await setup.push()
    done = await setup.finished(sha)
    try:
        assert done["status"] == "succeeded", done
        assert [o["kind"] for o in done["objects"] if o["action"] == "apply"] == [
            "CustomResourceDefinition",
            "Widget",
        ]
        live = kube_cluster.kubectl_json("get", f"widgets.{group}", "w1", "-n", setup.namespace)
        assert live["size"] == 3
    finally:
        kube_cluster.kubectl("delete", "crd", f"widgets.{group}", "--wait=false", check=False)


async def test_progress_streams_as_server_sent_events_and_the_cli_draws_it(
    setup: Setup, gitops: GitOps
) -> None:
    from app.gitops.cli import EXIT_SUCCEEDED, watch_deployment

    setup.repo.write("k8s/cm.yaml", config_map("watched"))
    sha, _ = await setup.push()
    done = await setup.finished(sha)
    path = f"{gitops.base}/deployments/{done['id']}/events"
    response = await gitops.api.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert "event: deployment\ndata: {" in response.text
    assert response.text.rstrip().endswith("event: end\ndata: {}")

    out = io.StringIO()
    gitops.api.client.headers["Authorization"] = f"Bearer {gitops.api.token}"
    try:
        code = await watch_deployment(gitops.api.client, gitops.project.id, done["id"], out=out)
    finally:
        del gitops.api.client.headers["Authorization"]
    assert code == EXIT_SUCCEEDED
    text = out.getvalue()
    assert f"deployment {done['id']}  succeeded" in text
    assert f"ConfigMap/{setup.namespace}/watched  healthy" in text
    other = await gitops.api.get(f"{gitops.base}/deployments/999999/events")
    assert other.status_code == 404


async def test_a_lost_job_is_found_by_the_pending_query_and_resumed(setup: Setup) -> None:
    """A deployment queued while no worker consumed its job is what the reconciler finds."""
    from app.core.db import session_scope, utcnow
    from app.gitops.models import Deployment
    from app.gitops.repository import pending_deployments_without_live_job
    from workers.gitops import resume_deployment

    setup.repo.write("k8s/cm.yaml", config_map("resumed"))
    sha = setup.repo.commit_and_push()
    with session_scope() as session:
        row = Deployment(
            project_id=setup.gitops.project.id,
            environment_id=setup.env["id"],
            status="queued",
            trigger="manual",
            triggered_by="test",
            ref="refs/heads/main",
            commit_sha=sha,
            coalesced=0,
        )
        session.add(row)
        session.flush()
        row.updated_at = utcnow() - timedelta(minutes=5)
        deployment_id = row.id
    with session_scope() as session:
        found = pending_deployments_without_live_job(session)
    assert found == [(deployment_id, setup.env["id"], "queued")]
    resume_deployment.send(deployment_id)
    done: dict[str, Any] = await wait_for(
        lambda: setup.gitops.deployment(deployment_id),
        lambda d: d["status"] == "succeeded",
        "the resumed deployment",
    )
    assert done["commit_sha"] == sha
    with session_scope() as session:
        assert pending_deployments_without_live_job(session) == []
