"""Benchmark: 2,000 agents reconnecting after an agent-server restart.

Usage: uv run python bench/agent_reconnect_storm.py [--agents 2000]
Needs Postgres (CLUSTERPORT_TEST_DATABASE_URL). Runs the real agent code (app.agent.main.Agent,
with its decorrelated-jitter backoff and drain handling) for every agent, in this process, each
with its own token, against one real agent-server process. Two restarts are measured:
graceful (SIGTERM: the server sends DRAIN with a reconnect hint, then a new process starts on the
same port) and a crash (SIGKILL, then a new process). Baseline in the same run: the time to open
the same number of plain connections to a bare `websockets` server (no auth, no HELLO).
Reports the time until every agent is back and the failed connection attempts.
"""

# Benchmark drivers block on purpose around the measured parts.
# ruff: noqa: ASYNC110, ASYNC220

from __future__ import annotations

import argparse
import asyncio
import logging
import resource
import signal
import subprocess
import sys
import time

import uvloop
from websockets.asyncio.client import connect

from app.agent.config import AgentSettings
from app.agent.kube import KubeTarget
from app.agent.main import CONNECTS, Agent
from app.agent.proxy import KubeProxy
from bench.agent_common import ROOT, ServerProcess, database, free_port, start_server


def attempts() -> dict[str, float]:
    counts: dict[str, float] = {}
    for metric in CONNECTS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                counts[sample.labels["outcome"]] = sample.value
    return counts


async def all_connected(agents: list[Agent], limit: float = 300) -> float:
    started = time.monotonic()
    while not all(agent.connected for agent in agents):
        if time.monotonic() - started > limit:
            raise SystemExit(f"only {sum(a.connected for a in agents)} agents came back")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def restart(
    server: ServerProcess, env: dict[str, str], agents: list[Agent], sig: int
) -> tuple[ServerProcess, float, float, dict[str, float]]:
    before = attempts()
    started = time.monotonic()
    server.popen.send_signal(sig)
    await asyncio.to_thread(server.popen.wait)
    new = await asyncio.to_thread(start_server, env, server.agent_port)
    ready = time.monotonic() - started
    # Wait until the agents noticed the old server went away, then until all are back.
    while all(agent.connected for agent in agents) and time.monotonic() - started < 5:
        await asyncio.sleep(0.01)
    await all_connected(agents)
    took = time.monotonic() - started
    after = attempts()
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    return new, took, ready, delta


async def bare_baseline(count: int) -> float:
    port = free_port()
    bare = subprocess.Popen([sys.executable, "-m", "bench.agent_bare_ws", str(port)], cwd=ROOT)
    try:
        await asyncio.sleep(1.5)
        started = time.monotonic()
        semaphore = asyncio.Semaphore(200)
        held = []

        async def one() -> None:
            async with semaphore:
                held.append(
                    await connect(
                        f"ws://127.0.0.1:{port}/", compression=None, ping_interval=None, proxy=None
                    )
                )

        await asyncio.gather(*(one() for _ in range(count)))
        took = time.monotonic() - started
        for ws in held:
            await ws.close()
        return took
    finally:
        bare.terminate()
        bare.wait()


async def run(count: int) -> None:
    logging.basicConfig(level=logging.ERROR)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    baseline = await bare_baseline(count)
    with database(count) as seeded:
        server = start_server(seeded.env)
        url = f"ws://127.0.0.1:{server.agent_port}/agent/connect"
        # Nothing listens there: the version lookup fails fast and is not part of this test.
        proxy = KubeProxy(KubeTarget(f"http://127.0.0.1:{free_port()}", False))
        agents = [
            Agent(AgentSettings(server_url=url, token=token), proxy)
            for token in seeded.agent_tokens
        ]
        tasks = [asyncio.create_task(agent.run_forever()) for agent in agents]
        try:
            first = await all_connected(agents)
            print(f"{count} agents connected from cold in {first:.1f} s")
            server, graceful, graceful_ready, graceful_attempts = await restart(
                server, seeded.env, agents, signal.SIGTERM
            )
            server, crash, crash_ready, crash_attempts = await restart(
                server, seeded.env, agents, signal.SIGKILL
            )
            for name, took, ready, counts in (
                ("graceful restart (drain hint)", graceful, graceful_ready, graceful_attempts),
                ("crash restart (SIGKILL)", crash, crash_ready, crash_attempts),
            ):
                failed = sum(v for k, v in counts.items() if k != "ok")
                detail = ", ".join(f"{k}: {v:.0f}" for k, v in sorted(counts.items()))
                print(
                    f"{name:>30}: all {count} back in {took:5.1f} s (new server ready after "
                    f"{ready:.1f} s); failed attempts {failed:.0f} ({detail})"
                )
            print(f"{'baseline (bare websockets)':>30}: {count} plain connects in {baseline:.1f} s")
        finally:
            for agent in agents:
                agent.stopping.set()
                if agent.session is not None:
                    await agent.session.close()
            await asyncio.gather(*tasks, return_exceptions=True)
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agents", type=int, default=2000)
    args = parser.parse_args()
    uvloop.run(run(args.agents))


if __name__ == "__main__":
    main()
