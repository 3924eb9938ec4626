"""Benchmark: connectivity check + namespace provisioning, `direct` vs `via_agent` clusters.

Usage: uv run python bench/clusters_via_agent.py [--clusters 200] [--agents 2] [--threads 8]
Needs Postgres (CLUSTERPORT_TEST_DATABASE_URL) and the Kubernetes binaries from
scripts/kube-tools. One real kube-apiserver (with its controller manager, which fills the
service account token Secrets), one agent server and `--agents` real agents in front of it.

Half the clusters are `direct`, half `via_agent` (spread over the agents). One worker (an
in-process Dramatiq worker with `--threads` threads, as `clusterport serve` runs it) checks
every cluster and provisions one namespace in each. Kinds alternate in batches (direct, via
agent, direct, via agent) so both see the same machine; the report gives the time per cluster
of each batch, the median per kind, and the via_agent / direct ratio (goal: at most 1.3).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.agent_common import ROOT, database, kube_apiserver, start_server

WARMUP = 4


def start_agent(env: dict[str, str], server_port: int, token: str, kubeconfig: Path) -> Any:
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "agent"],
        env={
            **env,
            "CLUSTERPORT_AGENT_SERVER_URL": f"ws://127.0.0.1:{server_port}/agent/connect",
            "CLUSTERPORT_AGENT_TOKEN": token,
            "CLUSTERPORT_AGENT_KUBECONFIG": str(kubeconfig),
            "CLUSTERPORT_AGENT_LIVENESS_HOST": "127.0.0.1",
            "CLUSTERPORT_AGENT_LIVENESS_PORT": "0",
        },
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait(condition: Callable[[], bool], what: str, limit: float = 600) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clusters", type=int, default=200)
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--batches", type=int, default=2, help="batches per kind")
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory() as tmp,
        kube_apiserver(Path(tmp) / "kube") as kube,
        database(args.agents) as seeded,
    ):
        seeded.env.pop("CLUSTERPORT_BROKER_URL", None)  # the in-process broker, as `serve`
        server = start_server(seeded.env)
        agents = [
            start_agent(seeded.env, server.agent_port, token, kube.kubeconfig)
            for token in seeded.agent_tokens
        ]
        try:
            os.environ.update(seeded.env)
            os.environ["CLUSTERPORT_ALLOW_LOCAL_NETWORK"] = "true"
            os.environ["CLUSTERPORT_AGENT_PROXY_INTERNAL_URL"] = (
                f"http://127.0.0.1:{server.proxy_port}"
            )
            run(kube, seeded.agent_ids, args)
        finally:
            for agent in agents:
                agent.terminate()
                agent.wait(30)
            server.stop()


def run(kube: Any, agent_ids: list[int], args: argparse.Namespace) -> None:
    # Imported only now: settings are read from the environment set above.
    import dramatiq

    from app.core.logging import configure_logging

    configure_logging("console", "WARNING")
    from sqlalchemy import func, select

    import workers
    from app.agents.models import AgentConnection
    from app.clusters.models import Cluster, ClusterStatus, KubernetesPlatform
    from app.core.db import session_scope
    from app.namespaces.models import NamespaceStatus, ProjectNamespace
    from app.projects.models import Project

    wait(
        lambda: (
            _count(select(func.count(func.distinct(AgentConnection.agent_id)))) == len(agent_ids)
        ),
        "the agents to connect",
    )
    ca_pem = kube.ca_file.read_text()
    half = args.clusters // 2
    per_batch = half // args.batches
    batches: list[tuple[str, list[int], list[int]]] = []
    # A first small batch of each kind warms up both paths (and the cluster's token
    # controller); it is not counted.
    plan = [(kind, -1, WARMUP) for kind in ("direct", "via_agent")] + [
        (kind, batch, per_batch)
        for batch in range(args.batches)
        for kind in ("direct", "via_agent")
    ]
    with session_scope() as session:
        project_id = session.scalar(select(Project.id))
        for kind, batch, size in plan:
            clusters = []
            for i in range(size):
                cluster = Cluster(
                    project_id=project_id,
                    name=f"{kind.replace('_', '-')}-{batch + 1}-{i}",
                    environment_scope=f"{kind}/{batch}/{i}",
                    status=ClusterStatus.connecting,
                )
                if kind == "direct":
                    cluster.platform = KubernetesPlatform(
                        api_url=kube.url, ca_pem=ca_pem, token=kube.token
                    )
                else:
                    cluster.agent_id = agent_ids[i % len(agent_ids)]
                clusters.append(cluster)
            session.add_all(clusters)
            session.flush()
            namespaces = [
                ProjectNamespace(
                    cluster_id=c.id,
                    project_id=project_id,
                    environment="bench",
                    namespace=f"bench-{c.name}",
                    service_account_name="clusterport-deployer",
                    status=NamespaceStatus.provisioning,
                )
                for c in clusters
            ]
            session.add_all(namespaces)
            session.flush()
            batches.append((kind, [c.id for c in clusters], [n.id for n in namespaces]))
    warmups = 2  # the first two batches

    worker = dramatiq.Worker(workers.broker, worker_threads=args.threads)
    worker.start()
    results: dict[str, list[float]] = {"direct": [], "via_agent": []}
    try:
        for index, (kind, cluster_ids, namespace_ids) in enumerate(batches):
            started = time.perf_counter()
            for cluster_id in cluster_ids:
                workers.clusters.check_cluster.send(cluster_id)
            wait(
                lambda ids=cluster_ids: (
                    _count(  # type: ignore[misc]
                        select(func.count(Cluster.id)).where(
                            Cluster.id.in_(ids), Cluster.status != ClusterStatus.connecting
                        )
                    )
                    == len(ids)
                ),
                f"{kind} checks",
            )
            for namespace_id in namespace_ids:
                workers.namespaces.ensure_namespace.send(namespace_id)
            wait(
                lambda ids=namespace_ids: (
                    _count(  # type: ignore[misc]
                        select(func.count(ProjectNamespace.id)).where(
                            ProjectNamespace.id.in_(ids),
                            ProjectNamespace.status != NamespaceStatus.provisioning,
                        )
                    )
                    == len(ids)
                ),
                f"{kind} namespaces",
            )
            elapsed = time.perf_counter() - started
            bad = _count(
                select(func.count(Cluster.id)).where(
                    Cluster.id.in_(cluster_ids), Cluster.status != ClusterStatus.connected
                )
            ) + _count(
                select(func.count(ProjectNamespace.id)).where(
                    ProjectNamespace.id.in_(namespace_ids),
                    ProjectNamespace.status != NamespaceStatus.ready,
                )
            )
            if bad:
                raise SystemExit(f"{bad} {kind} clusters or namespaces did not succeed")
            per_cluster = elapsed / len(cluster_ids)
            if index < warmups:
                print(f"{kind:>9}: warm-up, {elapsed:6.2f} s")
                continue
            results[kind].append(per_cluster)
            print(
                f"{kind:>9}: {len(cluster_ids)} clusters in {elapsed:6.2f} s, "
                f"{per_cluster * 1000:7.1f} ms per cluster"
            )
    finally:
        worker.stop()
    direct = statistics.median(results["direct"])
    via = statistics.median(results["via_agent"])
    print(
        f"median per cluster: direct {direct * 1000:.1f} ms, via_agent {via * 1000:.1f} ms, "
        f"ratio {via / direct:.2f} (goal <= 1.3)"
    )


def _count(query: Any) -> int:
    from app.core.db import session_scope

    with session_scope() as session:
        return int(session.scalar(query) or 0)


if __name__ == "__main__":
    main()
