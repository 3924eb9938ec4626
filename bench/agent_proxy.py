"""Benchmark: GET through agent server + agent (acting as the agent, and impersonating the
caller) vs directly to kube-apiserver, and vs a bare aiohttp reverse-proxy hop, all in the
same run.

Usage: uv run python -m bench.agent_proxy [--duration 10] [--rounds 3] [--quick]
Needs wrk, Postgres (CLUSTERPORT_TEST_DATABASE_URL) and the Kubernetes binaries from
scripts/kube-tools. Reports the median over rounds of: p50 with one request in flight, req/s
with 64 in flight (as a ratio to direct), and CPU seconds per request spent by the proxy
processes (agent server + agent, or the bare proxy).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from bench.agent_common import (
    ROOT,
    Kube,
    cpu_seconds,
    database,
    free_port,
    kube_apiserver,
    start_server,
)

PATH = "/api/v1/namespaces/default"


@dataclass
class Run:
    requests: int
    rps: float
    p50_ms: float


def wrk(url: str, headers: list[str], connections: int, duration: int) -> Run:
    threads = 1 if connections == 1 else 2
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        # wrk keeps one value per header name (-H); a request with repeated headers
        # (Impersonate-Group) is written out whole by a script.
        parts = urlsplit(url)
        lines = [f"GET {parts.path} HTTP/1.1", f"Host: {parts.netloc}", *headers]
        raw = "\r\n".join(lines) + "\r\n\r\n"
        # A JSON string of ASCII text is a valid Lua string literal.
        script.write(f"local raw = {json.dumps(raw)}\nrequest = function() return raw end\n")
        script.flush()
        cmd = [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "-s",
            script.name,
            url,
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out or "Socket errors" in out or " 0 requests in" in out:
        raise SystemExit(f"errors during the run:\n{out}")
    count = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    match = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    assert match
    value, unit = float(match.group(1)), match.group(2)
    p50 = value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    return Run(count, rps, p50)


def allow_impersonated(kube: Kube, project_id: int) -> None:
    """Let the impersonated project's group read namespaces (the built-in `view` role)."""
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "bench-impersonated-view"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [
            {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Group",
                "name": f"clusterport:project:{project_id}",
            }
        ],
    }
    response = httpx.post(
        f"{kube.url}/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        json=binding,
        headers={"Authorization": f"Bearer {kube.token}"},
        verify=str(kube.ca_file),
    )
    response.raise_for_status()


def measured(
    url: str, headers: list[str], connections: int, duration: int, pids: list[int]
) -> tuple[Run, float]:
    before = sum(cpu_seconds(pid) for pid in pids)
    run = wrk(url, headers, connections, duration)
    spent = sum(cpu_seconds(pid) for pid in pids) - before
    return run, spent / run.requests if pids else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="only direct, the bare proxy and the agent path (no impersonation)",
    )
    args = parser.parse_args()
    processes: list[subprocess.Popen[bytes]] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        kube_apiserver(Path(tmp) / "kube") as kube,
        database(1) as seeded,
    ):
        server = start_server(seeded.env)
        agent = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "agent"],
            env={
                **seeded.env,
                "CLUSTERPORT_AGENT_SERVER_URL": f"ws://127.0.0.1:{server.agent_port}/agent/connect",
                "CLUSTERPORT_AGENT_ALLOW_INSECURE": "true",
                "CLUSTERPORT_AGENT_TOKEN": seeded.agent_tokens[0],
                "CLUSTERPORT_AGENT_KUBECONFIG": str(kube.kubeconfig),
                "CLUSTERPORT_AGENT_LIVENESS_HOST": "127.0.0.1",
                "CLUSTERPORT_AGENT_LIVENESS_PORT": str(free_port()),
            },
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        bare_port = free_port()
        bare = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.agent_bare_proxy",
                str(bare_port),
                kube.url,
                kube.token,
                str(kube.ca_file),
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes += [agent, bare]
        try:
            agent_url = (
                f"http://127.0.0.1:{server.proxy_port}/k8s-proxy/agents/{seeded.agent_ids[0]}{PATH}"
            )
            bare_url = f"http://127.0.0.1:{bare_port}{PATH}"
            direct_url = kube.url + PATH
            allow_impersonated(kube, seeded.impersonated_project_id)
            for token in (seeded.api_token, seeded.impersonated_token):
                headers = {"Authorization": f"Bearer {token}"}
                deadline = time.monotonic() + 60
                while httpx.get(agent_url, headers=headers).status_code != 200:
                    if time.monotonic() > deadline:
                        raise SystemExit("the agent did not connect")
                    time.sleep(0.2)
            while True:
                try:
                    if httpx.get(bare_url).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)

            def bearer(token: str) -> list[str]:
                return [f"Authorization: Bearer {token}"]

            # What the agent sends for the impersonating token, sent straight to the API server:
            # the API server's own cost of impersonation, apart from the proxy's.
            project = seeded.impersonated_project_id
            impersonation = [f"Impersonate-User: clusterport:token:{seeded.impersonated_token_id}"]
            impersonation += [
                f"Impersonate-Group: clusterport:project:{project}{suffix}"
                for suffix in ("", ":reporter", ":developer", ":maintainer")
            ]
            proxy_pids = [server.pid, agent.pid]
            targets = {
                "direct": (direct_url, bearer(kube.token), []),
                "direct impersonating": (direct_url, bearer(kube.token) + impersonation, []),
                "bare aiohttp proxy": (bare_url, bearer("unused"), [bare.pid]),
                "agent server + agent": (agent_url, bearer(seeded.api_token), proxy_pids),
                "impersonating": (agent_url, bearer(seeded.impersonated_token), proxy_pids),
            }
            if args.quick:
                for name in ("direct impersonating", "impersonating"):
                    del targets[name]
            for url, headers, _ in targets.values():
                wrk(url, headers, 8, 2)  # warm-up
            p50: dict[str, list[float]] = {k: [] for k in targets}
            rps: dict[str, list[float]] = {k: [] for k in targets}
            cpu: dict[str, list[float]] = {k: [] for k in targets}
            names = list(targets)
            for round_ in range(args.rounds):
                # A different target goes first each round: none always follows the same one.
                shift = round_ % len(names)
                for name in names[shift:] + names[:shift]:
                    url, headers, pids = targets[name]
                    single, _ = measured(url, headers, 1, args.duration, pids)
                    loaded, per_request = measured(url, headers, 64, args.duration, pids)
                    p50[name].append(single.p50_ms)
                    rps[name].append(loaded.rps)
                    cpu[name].append(per_request)
            med = {
                k: (statistics.median(p50[k]), statistics.median(rps[k]), statistics.median(cpu[k]))
                for k in targets
            }
            direct = med["direct"]
            print(
                f"{'':>22}  {'p50 @1 (ms)':>12}  {'req/s @64':>10}  {'vs direct':>9}  "
                f"{'CPU/req (us)':>12}"
            )
            for name, (lat, r, c) in med.items():
                print(f"{name:>22}  {lat:12.2f}  {r:10.0f}  {r / direct[1]:8.2f}x  {c * 1e6:12.0f}")
            agent_med, bare_med = med["agent server + agent"], med["bare aiohttp proxy"]
            print(
                f"added p50 through the agent: {agent_med[0] - direct[0]:.2f} ms "
                f"(bare proxy adds {bare_med[0] - direct[0]:.2f} ms)"
            )
            print(f"CPU per proxied request: {agent_med[2] / bare_med[2]:.2f}x the bare proxy hop")
            if args.quick:
                return
            imp_med, direct_imp = med["impersonating"], med["direct impersonating"]
            print(
                f"added p50 impersonating: {imp_med[0] - direct[0]:.2f} ms vs "
                f"{agent_med[0] - direct[0]:.2f} ms as the agent "
                f"(p50 ratio {imp_med[0] / agent_med[0]:.2f}x, "
                f"req/s ratio {imp_med[1] / agent_med[1]:.2f}x); of it, the API server's own "
                f"impersonation checks: {direct_imp[0] - direct[0]:.2f} ms; the proxy's part: "
                f"{(imp_med[0] - direct_imp[0]) - (agent_med[0] - direct[0]):.2f} ms"
            )
        finally:
            for process in processes:
                process.terminate()
                process.wait()
            server.stop()


if __name__ == "__main__":
    main()
