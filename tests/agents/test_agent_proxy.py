"""A real agent and agent server in front of a real kube-apiserver, with kubectl through them."""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import subprocess
from collections.abc import Awaitable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.agents.conftest import AgentSetup, Processes, eventually
from tests.agents.support import CLUSTERPORT, AgentServerProc, Process
from tests.support.kubeapi import unique_name


def write_kubeconfig(
    setup: AgentSetup, server: AgentServerProc, path: Path, token: str, *extra: str
) -> Path:
    """`clusterport kubeconfig --agent ID` for the agent, through this server's proxy."""
    result = subprocess.run(
        [
            CLUSTERPORT,
            "kubeconfig",
            "--agent",
            str(setup.agent_id),
            "--server",
            server.proxy_url,
            "--ca-file",
            server.env["CLUSTERPORT_AGENT_TLS_CA_FILE"],
            "--kubeconfig",
            str(path),
            *extra,
        ],
        env={"CLUSTERPORT_TOKEN": token, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return path


def https(server: AgentServerProc) -> httpx.AsyncClient:
    """A client that trusts the agent server's test certificate."""
    context = ssl.create_default_context(cafile=server.env["CLUSTERPORT_AGENT_TLS_CA_FILE"])
    return httpx.AsyncClient(timeout=30, verify=context)


def kubectl(
    kube: Any, config: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [kube.kubectl_path, "--kubeconfig", str(config), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_kubectl_get_apply_delete_and_watch_through_the_agent(
    connected: tuple[AgentSetup, AgentServerProc, Process], kube_cluster: Any, tmp_path: Path
) -> None:
    setup, server, _agent = connected
    config = write_kubeconfig(setup, server, tmp_path / "kc", setup.developer_token)
    namespace = unique_name("agent")

    got = kubectl(kube_cluster, config, "get", "namespaces", "-o", "json")
    assert got.returncode == 0, got.stderr
    assert "kube-system" in {n["metadata"]["name"] for n in json.loads(got.stdout)["items"]}

    manifest = json.dumps(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    )
    applied = kubectl(kube_cluster, config, "apply", "-f", "-", stdin=manifest)
    assert applied.returncode == 0, applied.stderr
    # The object really is in the cluster (checked directly, not through the agent).
    assert kube_cluster.kubectl_json("get", "namespace", namespace)["metadata"]["name"] == namespace

    watch = await asyncio.create_subprocess_exec(
        kube_cluster.kubectl_path,
        "--kubeconfig",
        str(config),
        "get",
        "configmaps",
        "-n",
        namespace,
        "-w",
        "--output-watch-events",
        "-o",
        "json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        names = [unique_name("cm") for _ in range(3)]
        seen: set[str] = set()
        buffer = ""
        assert watch.stdout is not None
        for name in names:
            kube_cluster.kubectl("create", "configmap", name, "-n", namespace)
        decoder = json.JSONDecoder()
        while not set(names) <= seen:
            chunk = await asyncio.wait_for(watch.stdout.read(4096), 30)
            assert chunk, "the watch ended early"
            buffer += chunk.decode()
            while buffer.strip():
                try:
                    event, end = decoder.raw_decode(buffer.lstrip())
                except ValueError:
                    break
                buffer = buffer.lstrip()[end:]
                seen.add(event["object"]["metadata"]["name"])
    finally:
        watch.terminate()
        await watch.wait()

    deleted = kubectl(kube_cluster, config, "delete", "namespace", namespace, "--wait=false")
    assert deleted.returncode == 0, deleted.stderr
    phase = kube_cluster.kubectl_json("get", "namespace", namespace)["status"]["phase"]
    assert phase == "Terminating"


async def test_connection_is_listed_with_versions_and_replica(
    connected: tuple[AgentSetup, AgentServerProc, Process], kube_cluster: Any
) -> None:
    setup, server, _agent = connected
    [row] = await setup.connections()
    assert row["replica"] == server.replica
    assert row["token_id"] == setup.token_id
    assert row["agent_version"] == "0.1.0"
    version = kube_cluster.kubectl_json("version")["serverVersion"]["gitVersion"]
    assert row["kubernetes_version"] == version
    assert row["connected_at"] <= row["last_heartbeat_at"]
    tokens = (await setup.api.get(f"{setup.base}/tokens")).json()["items"]
    assert tokens[0]["last_used_at"] is not None


async def test_proxy_requires_a_token_allowed_on_the_agents_project(
    connected: tuple[AgentSetup, AgentServerProc, Process], admin: Any
) -> None:
    setup, server, _agent = connected
    url = f"{server.proxy_url}/k8s-proxy/agents/{setup.agent_id}/api/v1/namespaces"
    other = await admin.create_project("other-team")
    outsider = await admin.create_project_token(other["id"], role="maintainer")
    reporter = await admin.create_project_token(setup.project_id, role="reporter")
    async with https(server) as http:
        cases = [
            ({}, 401, "unauthorized"),
            ({"Authorization": "Bearer cpt_not-a-token"}, 401, "invalid_token"),
            ({"Authorization": f"Bearer {setup.token}"}, 401, "invalid_token"),  # agent token
            ({"Authorization": f"Bearer {outsider}"}, 404, "agent_not_found"),
            ({"Authorization": f"Bearer {reporter}"}, 403, "insufficient_role"),
        ]
        for headers, status, code in cases:
            response = await http.get(url, headers=headers)
            assert response.status_code == status, response.text
            body = response.json()
            assert body["kind"] == "Status"
            assert body["details"]["causes"][0]["reason"] == code
            assert "hop=agent-server" in body["details"]["causes"][0]["field"]
        ok = await http.get(url, headers={"Authorization": f"Bearer {setup.developer_token}"})
        assert ok.status_code == 200
        assert ok.json()["kind"] == "NamespaceList"


async def test_disconnected_agent_fails_fast_with_a_status_naming_the_hop(
    agent_setup: AgentSetup, processes: Processes, kube_cluster: Any, tmp_path: Path
) -> None:
    server = processes.server()
    config = write_kubeconfig(agent_setup, server, tmp_path / "kc", agent_setup.developer_token)
    async with https(server) as http:
        response = await http.get(
            f"{server.proxy_url}/k8s-proxy/agents/{agent_setup.agent_id}/api/v1/namespaces",
            headers={"Authorization": f"Bearer {agent_setup.developer_token}"},
        )
    assert response.status_code == 503
    body = response.json()
    assert body["kind"] == "Status" and body["code"] == 503
    assert body["details"]["causes"][0]["reason"] == "agent_not_connected"
    assert "agent-server" in body["message"]
    got = kubectl(kube_cluster, config, "get", "namespaces")
    assert got.returncode != 0
    assert "ServiceUnavailable" in got.stderr


async def test_reconnects_after_a_server_restart(
    connected: tuple[AgentSetup, AgentServerProc, Process],
    processes: Processes,
    kube_cluster: Any,
    tmp_path: Path,
) -> None:
    setup, first, agent = connected
    assert first.process.stop(signal.SIGTERM) == 0  # drains: agents get a reconnect hint
    second = processes.server(agent_port=first.agent_port)

    async def on_second() -> bool:
        rows = await setup.connections()
        return any(row["replica"] == second.replica for row in rows)

    await eventually(on_second, "the agent to reconnect to the restarted server")
    assert agent.alive()
    config = write_kubeconfig(setup, second, tmp_path / "kc", setup.developer_token)
    got = kubectl(kube_cluster, config, "get", "namespace", "default", "-o", "name")
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == "namespace/default"


async def test_requests_are_routed_to_the_replica_holding_the_agent(
    agent_setup: AgentSetup, processes: Processes, kube_cluster: Any, tmp_path: Path
) -> None:
    replica_a = processes.server()
    replica_b = processes.server()
    processes.agent(replica_b.agent_url, agent_setup.token, kube_cluster.kubeconfig)
    await eventually(agent_setup.connections, "the agent to connect to replica B")
    config = write_kubeconfig(agent_setup, replica_a, tmp_path / "kc", agent_setup.developer_token)

    got = kubectl(kube_cluster, config, "get", "namespace", "kube-system", "-o", "name")
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == "namespace/kube-system"
    async with https(replica_a) as http:
        metrics = (await http.get(f"http://127.0.0.1:{replica_a.health_port}/metrics")).text
    assert 'clusterport_agent_proxy_requests_total{outcome="ok",route="routed"}' in metrics

    # Replica B dies without a goodbye: A first reports the routing hop, then forgets B.
    replica_b.process.stop(signal.SIGKILL)
    headers = {"Authorization": f"Bearer {agent_setup.developer_token}"}
    url = f"{replica_a.proxy_url}/k8s-proxy/agents/{agent_setup.agent_id}/version"
    async with https(replica_a) as http:

        async def forgotten() -> dict[str, Any] | None:
            response = await http.get(url, headers=headers)
            body: dict[str, Any] = response.json()
            assert body["kind"] == "Status", body
            cause = body["details"]["causes"][0]
            if cause["reason"] == "replica_unreachable":
                assert response.status_code == 502
                assert "agent-server-routing" in body["message"]
                return None
            return body

        body = await eventually(forgotten, "replica B to be forgotten")
    assert body is not None
    assert body["code"] == 503
    assert body["details"]["causes"][0]["reason"] == "agent_not_connected"

    async def no_rows() -> bool:
        return await agent_setup.connections() == []

    # The dead replica's connection rows go with it.
    await eventually(no_rows, "the dead replica's connections to be dropped")


async def test_agent_serves_liveness_readiness_and_metrics(
    connected: tuple[AgentSetup, AgentServerProc, Process],
) -> None:
    _setup, _server, agent = connected
    base = f"http://127.0.0.1:{agent.env['CLUSTERPORT_AGENT_LIVENESS_PORT']}"
    async with httpx.AsyncClient(timeout=30) as http:
        assert (await http.get(f"{base}/liveness")).status_code == 200
        assert (await http.get(f"{base}/readiness")).status_code == 200
        metrics = (await http.get(f"{base}/metrics")).text
    assert "clusterport_agent_connected 1.0" in metrics


async def test_a_client_that_stops_reading_does_not_stall_other_requests(
    connected: tuple[AgentSetup, AgentServerProc, Process], kube_cluster: Any, tmp_path: Path
) -> None:
    setup, server, agent = connected
    context = ssl.create_default_context(cafile=server.env["CLUSTERPORT_AGENT_TLS_CA_FILE"])
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", server.proxy_port, ssl=context, limit=1024
    )
    # The OpenAPI v2 document is several MiB: far more than the tunnel window and socket buffers.
    writer.write(
        (
            f"GET /k8s-proxy/agents/{setup.agent_id}/openapi/v2 HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\nAuthorization: Bearer {setup.developer_token}\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    status_line = await reader.readline()  # read only the status line, then stop reading
    assert b"200" in status_line
    config = write_kubeconfig(setup, server, tmp_path / "kc", setup.developer_token)
    for _ in range(3):
        got = kubectl(kube_cluster, config, "get", "namespace", "default", "-o", "name")
        assert got.returncode == 0, got.stderr
    writer.close()
    assert agent.alive() and server.process.alive()
    [row] = await setup.connections()
    assert row["replica"] == server.replica


async def test_in_cluster_agent_uses_its_service_account_and_token_file(
    agent_setup: AgentSetup, processes: Processes, kube_cluster: Any, tmp_path: Path
) -> None:
    # What the kubelet mounts into the agent's pod: a service account token and the CA.
    account = unique_name("agent-sa")
    kube_cluster.kubectl("create", "serviceaccount", account, "-n", "default")
    kube_cluster.kubectl(
        "create",
        "clusterrolebinding",
        account,
        "--clusterrole=view",
        f"--serviceaccount=default:{account}",
    )
    mounted = tmp_path / "serviceaccount"
    mounted.mkdir()
    sa_token = kube_cluster.kubectl("create", "token", account, "-n", "default").stdout.strip()
    (mounted / "token").write_text(sa_token)
    (mounted / "ca.crt").write_text(kube_cluster.ca_pem)
    # The agent token comes from a file (a mounted Secret), not the environment.
    token_file = tmp_path / "agent-token"
    token_file.write_text(agent_setup.token + "\n")
    api = urlsplit(kube_cluster.url)
    server = processes.server()
    processes.agent(
        server.agent_url,
        "",
        None,
        {
            "CLUSTERPORT_AGENT_TOKEN_FILE": str(token_file),
            "CLUSTERPORT_AGENT_SERVICE_ACCOUNT_DIR": str(mounted),
            "KUBERNETES_SERVICE_HOST": str(api.hostname),
            "KUBERNETES_SERVICE_PORT": str(api.port),
        },
    )
    await eventually(agent_setup.connections, "the in-cluster agent to connect")
    config = write_kubeconfig(agent_setup, server, tmp_path / "kc", agent_setup.developer_token)
    got = kubectl(kube_cluster, config, "get", "namespace", "default", "-o", "name")
    assert got.returncode == 0, got.stderr
    # The agent acts as its service account: `view` may read but not write.
    refused = kubectl(kube_cluster, config, "create", "configmap", unique_name("cm"))
    assert refused.returncode != 0
    assert "forbidden" in refused.stderr
    assert f"system:serviceaccount:default:{account}" in refused.stderr


async def test_a_routed_request_carries_a_signed_assertion_never_the_callers_token(
    agent_setup: AgentSetup, processes: Processes
) -> None:
    """The replica holding the agent here is a loopback recorder registered as a live replica:
    it sees exactly what one replica sends another."""
    from aiohttp import web

    from app.agents.credentials import read_grant
    from app.agents.models import AgentConnection, AgentServerReplica
    from app.core.db import session_scope, utcnow

    seen: list[dict[str, str]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"major": "1"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server = processes.server()
    replica = unique_name("recorder")
    now = utcnow()
    with session_scope() as session:
        session.add(
            AgentServerReplica(
                name=replica,
                proxy_url=f"http://127.0.0.1:{port}",
                started_at=now,
                # Alive for the whole test even when the agent server takes seconds to start
                # (its first heartbeat forgets replicas silent for 3 s).
                heartbeat_at=now + timedelta(minutes=5),
            )
        )
        session.flush()
        session.add(
            AgentConnection(
                id=unique_name("c"),
                agent_id=agent_setup.agent_id,
                token_id=agent_setup.token_id,
                replica=replica,
                agent_version="recorder",
                kubernetes_version="v1",
                source_address="127.0.0.1",
                connected_at=now,
                last_heartbeat_at=now,
            )
        )
    try:
        url = f"{server.proxy_url}/k8s-proxy/agents/{agent_setup.agent_id}/version"
        async with https(server) as http:
            got = await http.get(
                url, headers={"Authorization": f"Bearer {agent_setup.developer_token}"}
            )
        assert got.status_code == 200, got.text
        assert len(seen) == 1
        sent = {k.lower(): v for k, v in seen[0].items()}
        assert agent_setup.developer_token not in json.dumps(sent)
        scheme, _, credential = sent["authorization"].partition(" ")
        assert scheme == "Bearer"
        grant = read_grant(credential)
        assert grant.agent_id == agent_setup.agent_id
        assert grant.acting is not None
        assert grant.acting.headers == ()  # the agent's own identity, as this replica decided
        assert sent["x-clusterport-routed-from"] == server.replica
    finally:
        with session_scope() as session:
            replica_row = session.get(AgentServerReplica, replica)
            if replica_row is not None:
                session.delete(replica_row)
        await runner.cleanup()


async def test_revoking_an_api_token_ends_its_proxy_watches_on_every_replica(
    connected: tuple[AgentSetup, AgentServerProc, Process], processes: Processes
) -> None:
    setup, holder, _agent = connected
    other = processes.server()  # routes to `holder`, which has the agent's tunnel
    created = await setup.api.post(
        f"/api/v1/projects/{setup.project_id}/tokens", {"name": "watcher", "role": "developer"}
    )
    assert created.status_code == 201, created.text
    token, token_id = created.json()["token"], created.json()["id"]
    headers = {"Authorization": f"Bearer {token}"}
    path = f"/k8s-proxy/agents/{setup.agent_id}/api/v1/namespaces?watch=1"

    async def watch(server: AgentServerProc, started: asyncio.Event) -> str:
        async with https(server) as http:
            try:
                async with http.stream("GET", server.proxy_url + path, headers=headers) as reply:
                    assert reply.status_code == 200
                    async for _ in reply.aiter_bytes():
                        started.set()  # the first event: the watch is open end to end
            except httpx.HTTPError:
                return "cut"
        return "ended"

    events = [asyncio.Event(), asyncio.Event()]
    watches = [
        asyncio.create_task(watch(server, event))
        for server, event in zip((holder, other), events, strict=True)
    ]
    try:
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), 60)
        revoked = await setup.api.delete(f"/api/v1/projects/{setup.project_id}/tokens/{token_id}")
        assert revoked.status_code == 204, revoked.text
        # Both end on their own (the test waits at most 30 s; the replicas look every 0.25 s).
        _done, pending = await asyncio.wait(watches, timeout=30)
        assert not pending, "a watch outlived its revoked token"
    finally:
        for task in watches:
            task.cancel()
    async with https(holder) as http:
        again = await http.get(holder.proxy_url + path.split("?")[0], headers=headers)
    assert again.status_code == 401, again.text


async def test_a_watch_its_client_leaves_ends_at_the_api_server(
    connected: tuple[AgentSetup, AgentServerProc, Process], kube_cluster: Any
) -> None:
    """The agent ends its upstream watch as soon as the client leaves, not at the next event
    (a watch of a quiet resource would stay open at the API server for up to an hour)."""
    setup, server, _agent = connected
    context = ssl.create_default_context(cadata=kube_cluster.ca_pem)
    admin = {"Authorization": f"Bearer {kube_cluster.token}"}

    async def watches_at_the_api_server() -> int:
        async with httpx.AsyncClient(verify=context, timeout=30) as http:
            metrics = (await http.get(kube_cluster.url + "/metrics", headers=admin)).text
        return sum(
            int(float(line.rsplit(" ", 1)[1]))
            for line in metrics.splitlines()
            if line.startswith("apiserver_longrunning_requests{")
            and 'resource="configmaps"' in line
            and 'scope="namespace"' in line
            and 'verb="WATCH"' in line
        )

    before = await watches_at_the_api_server()
    path = f"/k8s-proxy/agents/{setup.agent_id}/api/v1/namespaces/{unique_name('quiet')}"
    headers = {"Authorization": f"Bearer {setup.developer_token}"}
    async with (
        https(server) as http,
        http.stream("GET", f"{server.proxy_url}{path}/configmaps?watch=1", headers=headers) as w,
    ):
        assert w.status_code == 200
        await eventually(
            lambda: _equals(watches_at_the_api_server(), before + 1), "the watch upstream"
        )
    await eventually(
        lambda: _equals(watches_at_the_api_server(), before), "the upstream watch to end"
    )


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected
