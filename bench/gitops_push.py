"""Benchmark: a git push to healthy objects, and a burst of pushes to one environment.

Push to healthy, for a cluster reached directly and for one reached through an agent (a real
`clusterport agent-server` and `clusterport agent` on loopback; the worker knows only the agent
server's proxy URL): 10 objects (a Deployment with 2 replicas, a Service, ConfigMaps, a Secret,
a ServiceAccount, a Role and RoleBinding, a PodDisruptionBudget); each push changes a ConfigMap
and the Deployment's pod template, so every push is a real rollout. clusterport's time is from
the webhook's arrival (the delivery's `received_at`) to the deployment's `finished_at`
(succeeded: applied, pruned, every object healthy). Each push is delivered to the direct
environment, then (through a second source on the same repository) to the agent's, each in its
own namespace. The baseline in the same run, alternating with them, on the same cluster:
`kubectl apply --server-side -f DIR` then `kubectl rollout status` on the same objects in a
namespace of its own.

Burst: N commits pushed at once, then their N webhooks as fast as one client sends them; it
reports how many deployments ran, whether the newest commit is the one applied, and whether
every delivery was recorded.

Everything is real and on loopback: Postgres and RabbitMQ (`scripts/services`), a
kube-apiserver with controller-manager, scheduler and kwok (`scripts/kube-up`), a git server
(`git http-backend`), the API (in process, ASGI) and a Dramatiq worker (in process, 4 threads).

Run: `eval "$(scripts/services)"; eval "$(scripts/kube-tools --exports)";
uv run python bench/gitops_push.py [--pushes 50] [--burst 100] [--no-agent]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SECRET = "bench-webhook-secret-0123456789"


WITH_PODS = True


def manifests(index: int) -> dict[str, str]:
    """The 10 objects at push `index` (without pods: a ConfigMap instead of the Deployment,
    for clusters where no pod can run)."""
    files = {
        "deployment.yaml": f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  strategy: {{rollingUpdate: {{maxSurge: 2, maxUnavailable: 0}}}}
  template:
    metadata:
      labels: {{app: web}}
      annotations: {{bench/push: "{index}"}}
    spec:
      serviceAccountName: web
      containers:
      - name: web
        image: registry.example.invalid/web:1
""",
        "service.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n"
        "  selector: {app: web}\n  ports: [{port: 80}]\n",
        "config.yaml": "\n---\n".join(
            f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\n"
            f"data: {{push: '{value}'}}"
            for name, value in (("settings", index), ("features", 1), ("limits", 1))
        )
        + "\n",
        "secret.yaml": "apiVersion: v1\nkind: Secret\nmetadata: {name: web}\n"
        "stringData: {password: not-a-real-one}\n",
        "rbac.yaml": """apiVersion: v1
kind: ServiceAccount
metadata: {name: web}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: web}
rules: [{apiGroups: [""], resources: [configmaps], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: web}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: web}
subjects: [{kind: ServiceAccount, name: web}]
""",
        "pdb.yaml": "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: web}\n"
        "spec:\n  minAvailable: 1\n  selector: {matchLabels: {app: web}}\n",
    }
    if not WITH_PODS:
        files["deployment.yaml"] = (
            f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: web}}\ndata: {{push: '{index}'}}\n"
        )
    return files


async def poll(probe: Callable[[], Any]) -> Any:
    """`probe()` until it is not None (the work happens in the worker threads)."""
    while True:
        result = probe()
        if result is not None:
            return result
        await asyncio.sleep(0.01)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(values, 50) * 1000, 1),
        "p95_ms": round(percentile(values, 95) * 1000, 1),
        "mean_ms": round(statistics.fmean(values) * 1000, 1),
    }


class Kubectl:
    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig

    def __call__(self, *args: str, input: str | None = None) -> str:
        proc = subprocess.run(
            ["kubectl", "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout


def kubectl_baseline(kubectl: Kubectl, namespace: str, folder: Path, index: int) -> float:
    for name, text in manifests(index).items():
        (folder / name).write_text(text)
    start = time.perf_counter()
    kubectl("apply", "--server-side", "--field-manager=bench", "-n", namespace, "-f", str(folder))
    if WITH_PODS:
        kubectl("rollout", "status", "deployment/web", "-n", namespace, "--timeout=300s")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pushes", type=int, default=50)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument(
        "--without-pods", action="store_true", help="no Deployment (clusters without kwok)"
    )
    parser.add_argument(
        "--no-agent", action="store_true", help="only the direct cluster (no agent processes)"
    )
    args = parser.parse_args()
    global WITH_PODS
    WITH_PODS = not args.without_pods

    from tests.support.services import start_test_services

    services = start_test_services()
    os.environ.update(
        CLUSTERPORT_DATABASE_URL=services.database_url,
        CLUSTERPORT_BROKER_URL=services.broker_url,
        CLUSTERPORT_ALLOW_LOCAL_NETWORK="true",
        CLUSTERPORT_LOG_LEVEL="WARNING",
        CLUSTERPORT_LOG_FORMAT="console",
        # Latency is measured, not the per-project rate limit (two environments deploy each
        # push, which would otherwise queue behind the limit).
        CLUSTERPORT_GITOPS_PROJECT_DEPLOYMENTS_PER_MINUTE="100000",
    )
    from cryptography.fernet import Fernet

    os.environ["CLUSTERPORT_ENCRYPTION_KEYS"] = Fernet.generate_key().decode()
    work = Path(tempfile.mkdtemp(prefix="bench-gitops-"))
    os.environ["CLUSTERPORT_GITOPS_CACHE_DIR"] = str(work / "cache")
    state = work / "kube"
    up = subprocess.run(
        [str(REPO / "scripts/kube-up"), str(state)], capture_output=True, text=True, check=False
    )
    if up.returncode != 0:
        raise SystemExit(f"scripts/kube-up failed:\n{up.stderr}")
    from app.cli import migrate_database
    from tests.agents.support import make_tls, start_agent_server

    agents = Agents(work)
    if not args.no_agent:
        migrate_database()  # the agent server registers its replica at start
        agents.tls = make_tls(work)
        agents.server = start_agent_server(work, agents.tls)
        # The worker (this process) reaches agents through this replica's proxy.
        os.environ["CLUSTERPORT_AGENT_PROXY_INTERNAL_URL"] = agents.server.proxy_url
        os.environ["CLUSTERPORT_AGENT_TLS_CA_FILE"] = str(agents.tls.cert)
    try:
        asyncio.run(run(args, work, state, agents))
    finally:
        agents.stop()
        subprocess.run(
            [str(REPO / "scripts/kube-down"), str(state)], capture_output=True, check=False
        )
        from app.core.db import get_engine

        get_engine().dispose()
        services.close()


class Agents:
    """The agent server and agent processes (none with `--no-agent`)."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.tls: Any = None
        self.server: Any = None
        self.agent: Any = None

    def start_agent(self, token: str, kubeconfig: Path) -> None:
        from tests.agents.support import start_agent

        assert self.server is not None
        self.agent = start_agent(
            self.work,
            self.server.agent_url,
            token,
            kubeconfig,
            self.tls.cert,
            {"CLUSTERPORT_AGENT_LIVENESS_PORT": "0"},  # any free port: no race with others
        )

    def stop(self) -> None:
        for process in (self.agent, self.server and self.server.process):
            if process is not None:
                process.stop()


async def run(args: argparse.Namespace, work: Path, state: Path, agents: Agents) -> None:
    import dramatiq
    import httpx

    import workers
    from app.cli import migrate_database
    from app.core.db import session_scope
    from app.gitops.models import Deployment, WebhookDelivery
    from app.main import create_app
    from tests.conftest import create_admin_token
    from tests.gitops.webhooks import github_push
    from tests.support.git_server import git_server

    migrate_database()
    kubectl = Kubectl(state / "kubeconfig")
    worker = dramatiq.Worker(workers.broker, worker_threads=4, worker_timeout=100)
    worker.start()
    (work / "served").mkdir()
    app = create_app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        client.headers["Authorization"] = f"Bearer {create_admin_token()}"
        with git_server(work / "served") as server:
            project = (await client.post("/api/v1/projects", json={"name": "bench"})).json()
            base = f"/api/v1/projects/{project['id']}"
            for ns in ("bench-clusterport", "bench-kubectl", "bench-burst"):
                kubectl("create", "namespace", ns)
            cluster = (
                await client.post(
                    f"{base}/clusters",
                    json={
                        "name": "local",
                        "managed": False,
                        "kubernetes": {
                            "api_url": (state / "server").read_text().strip(),
                            "ca_pem": (state / "ca.crt").read_text(),
                            "token": (state / "token").read_text().strip(),
                        },
                    },
                )
            ).json()
            repo = server.create("app", work)

            async def new_source(name: str) -> dict[str, Any]:
                response = await client.post(
                    f"{base}/gitops/sources",
                    json={
                        "name": name,
                        "url": server.url_of("app"),
                        "paths": ["k8s"],
                        "webhook_secret": SECRET,
                        "poll_interval_seconds": 0,  # only webhooks in this benchmark
                    },
                )
                assert response.status_code == 201, response.text
                created: dict[str, Any] = response.json()
                return created

            source = await new_source("app")

            async def environment(
                name: str, namespace: str, *, of: dict[str, Any] = source, cluster_id: int = 0
            ) -> int:
                response = await client.post(
                    f"{base}/gitops/environments",
                    json={
                        "name": name,
                        "source_id": of["id"],
                        "cluster_id": cluster_id or cluster["id"],
                        "namespace": namespace,
                        "auto_sync": name != "burst",
                    },
                )
                assert response.status_code == 201, response.text
                env_id: int = response.json()["id"]
                return env_id

            push_env = await environment("push", "bench-clusterport")
            agent_source: dict[str, Any] | None = None
            if agents.server is not None:
                agent_source = await new_source("app-agent")
                agent_cluster = await _agent_cluster(client, base, agents, state / "kubeconfig")
                kubectl("create", "namespace", "bench-agent")
                await environment("agent", "bench-agent", of=agent_source, cluster_id=agent_cluster)

            def write(index: int) -> None:
                for name, text in manifests(index).items():
                    repo.write(f"k8s/{name}", text)

            def finished(delivery_id: int) -> tuple[float, str] | None:
                with session_scope() as session:
                    delivery = session.get(WebhookDelivery, delivery_id)
                    assert delivery is not None
                    deployment = (
                        session.query(Deployment)
                        .filter(Deployment.delivery_id == delivery_id)
                        .one_or_none()
                    )
                    if deployment is None or deployment.finished_at is None:
                        return None
                    took = (deployment.finished_at - delivery.received_at).total_seconds()
                    return took, deployment.status

            async def deliver(sha: str, to: dict[str, Any] = source) -> tuple[int, float]:
                headers, body = github_push(SECRET, "refs/heads/main", sha)
                start = time.perf_counter()
                response = await client.post(to["hook_path"], content=body, headers=headers)
                elapsed = time.perf_counter() - start
                assert response.status_code == 202, response.text
                delivery_id: int = response.json()["delivery_id"]
                return delivery_id, elapsed

            folder = work / "kubectl"
            folder.mkdir()
            ours: list[float] = []
            through_agent: list[float] = []
            baseline: list[float] = []
            hook_latency: list[float] = []
            for index in range(args.pushes + 1):  # the first of each is a warm-up
                write(index)
                sha = repo.commit_and_push(f"push {index}")
                delivery_id, elapsed = await deliver(sha)
                took, status = await poll(partial(finished, delivery_id))
                if status != "succeeded":
                    raise SystemExit(f"push {index}: deployment {status}")
                if agent_source is not None:
                    agent_delivery, _ = await deliver(sha, agent_source)
                    agent_took, status = await poll(partial(finished, agent_delivery))
                    if status != "succeeded":
                        raise SystemExit(f"push {index} through the agent: deployment {status}")
                base_took = kubectl_baseline(kubectl, "bench-kubectl", folder, index)
                if index:
                    ours.append(took)
                    baseline.append(base_took)
                    hook_latency.append(elapsed)
                    if agent_source is not None:
                        through_agent.append(agent_took)

            # Burst: every commit pushed at once, then one delivery per commit.
            burst_env = await environment("burst", "bench-burst")
            await client.patch(f"{base}/gitops/environments/{push_env}", json={"auto_sync": False})
            await client.patch(f"{base}/gitops/environments/{burst_env}", json={"auto_sync": True})
            commits = []
            for index in range(args.burst):
                write(10_000 + index)
                commits.append(repo.commit(f"burst {index}"))
            repo.push()
            start = time.perf_counter()
            # Ten at a time, as a git host's webhook workers would send them: arrival order is
            # not push order, and the branch's head is what must end up applied.
            deliveries = []
            for chunk in range(0, len(commits), 10):
                deliveries += await asyncio.gather(
                    *(deliver(sha) for sha in commits[chunk : chunk + 10])
                )
            send_seconds = time.perf_counter() - start

            def burst_state() -> tuple[list[Deployment], int]:
                with session_scope() as session:
                    rows = list(
                        session.query(Deployment)
                        .filter(Deployment.environment_id == burst_env)
                        .order_by(Deployment.id)
                    )
                    recorded = (
                        session.query(WebhookDelivery)
                        .filter(WebhookDelivery.id.in_([d for d, _ in deliveries]))
                        .count()
                    )
                    return rows, recorded

            while True:
                rows, recorded = burst_state()
                if rows and all(r.finished_at is not None for r in rows):
                    with session_scope() as session:
                        pending = (
                            session.query(WebhookDelivery)
                            .filter(WebhookDelivery.outcome == "received")
                            .count()
                        )
                    if pending == 0:
                        break
                await asyncio.sleep(0.05)
            live = json.loads(
                kubectl("get", "configmap", "settings", "-n", "bench-burst", "-o", "json")
            )
    worker.stop()
    from app.core.db import dispose_engines

    await dispose_engines()
    report = {
        "push_to_healthy": {
            "pushes": len(ours),
            "clusterport_direct": summary(ours),
            **(
                {
                    "clusterport_via_agent": summary(through_agent),
                    "via_agent_over_direct_p50": round(
                        percentile(through_agent, 50) / percentile(ours, 50), 2
                    ),
                }
                if through_agent
                else {}
            ),
            "kubectl_apply_server_side_plus_rollout_status": summary(baseline),
            "ratio_p50": round(percentile(ours, 50) / percentile(baseline, 50), 2),
            "ratio_p95": round(percentile(ours, 95) / percentile(baseline, 95), 2),
            "webhook_202": summary(hook_latency),
        },
        "burst": {
            "pushes": args.burst,
            "sent_in_seconds": round(send_seconds, 2),
            "deployments": len(rows),
            "statuses": [r.status for r in rows],
            "newest_commit_applied": rows[-1].commit_sha == commits[-1]
            and live["data"]["push"] == str(10_000 + args.burst - 1),
            "deliveries_recorded": recorded,
            "deliveries_folded_into_deployments": sum(r.coalesced + 1 for r in rows),
        },
    }
    print(json.dumps(report, indent=2))


async def _agent_cluster(client: Any, base: str, agents: Agents, kubeconfig: Path) -> int:
    """A new agent of the project, its process started in front of the cluster (admin
    kubeconfig), and a cluster reached through it; returns the cluster's id once connected."""
    agent = (await client.post(f"{base}/agents", json={"name": "edge"})).json()
    token = (
        await client.post(f"{base}/agents/{agent['id']}/tokens", json={"name": "bench"})
    ).json()["token"]
    agents.start_agent(token, kubeconfig)

    async def connected() -> bool | None:
        if not agents.agent.alive():
            raise SystemExit(f"the agent exited:\n{agents.agent.log()}")
        rows = (await client.get(f"{base}/agents/{agent['id']}/connections")).json()["items"]
        return True if rows else None

    await apoll(connected)
    created = await client.post(
        f"{base}/clusters",
        json={"name": "edge", "environment_scope": "agent", "agent_id": agent["id"]},
    )
    assert created.status_code == 201, created.text
    cluster_id: int = created.json()["id"]

    async def checked() -> str | None:
        status: str = (await client.get(f"{base}/clusters/{cluster_id}")).json()["status"]
        return None if status == "connecting" else status

    status = await apoll(checked)
    if status != "connected":
        raise SystemExit(f"the cluster behind the agent is {status}")
    return cluster_id


async def apoll(probe: Callable[[], Any]) -> Any:
    """`await probe()` until it is not None, for at most two minutes."""
    deadline = time.monotonic() + 120
    while True:
        result = await probe()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for the agent")
        await asyncio.sleep(0.05)


if __name__ == "__main__":
    main()
