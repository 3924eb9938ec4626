"""Benchmark: RSS per idle agent connection on one agent-server process, against a bare
`websockets` server holding the same number of connections, in the same run.

Usage: uv run python bench/agent_idle_connections.py [--connections 10000]
Needs Postgres (CLUSTERPORT_TEST_DATABASE_URL, as scripts/services prints it). Each agent
connection authenticates with a real agent token, completes the HELLO exchange and is recorded
in the connection registry; then it stays idle. RSS is measured from /proc before and after.
"""

# Benchmark drivers block on purpose around the measured parts.
# ruff: noqa: ASYNC220, ASYNC251

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import subprocess
import sys
import time

import uvloop
from websockets.asyncio.client import ClientConnection, connect

from app.tunnel.session import Session
from app.tunnel.transport import WebsocketTransport
from bench.agent_common import ROOT, database, free_port, rss, start_server


async def open_agents(
    url: str, tokens: list[str], count: int
) -> list[tuple[ClientConnection, Session]]:
    held: list[tuple[ClientConnection, Session]] = []
    semaphore = asyncio.Semaphore(200)
    tasks: set[asyncio.Task[object]] = set()

    async def one(i: int) -> None:
        async with semaphore:
            ws = await connect(
                url,
                additional_headers={"Authorization": f"Bearer {tokens[i % len(tokens)]}"},
                compression=None,
                ping_interval=None,
                proxy=None,
                open_timeout=60,
            )
            session = Session(WebsocketTransport(ws), is_server=False, hello={}, send_pings=True)
            await session.handshake()
            # Answer and send heartbeats like an agent, or the server would drop us as dead.
            tasks.add(asyncio.create_task(session.run()))
            held.append((ws, session))

    await asyncio.gather(*(one(i) for i in range(count)))
    return held


async def open_plain(url: str, count: int) -> list[ClientConnection]:
    semaphore = asyncio.Semaphore(200)
    held: list[ClientConnection] = []

    async def one() -> None:
        async with semaphore:
            held.append(await connect(url, compression=None, ping_interval=None, proxy=None))

    await asyncio.gather(*(one() for _ in range(count)))
    return held


def settle(pid: int) -> int:
    """RSS once it stops moving (the server finishes registry writes after the last upgrade)."""
    last = rss(pid)
    for _ in range(30):
        time.sleep(0.5)
        now = rss(pid)
        if abs(now - last) < 64 * 1024:
            return now
        last = now
    return last


async def run(connections: int) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tokens_needed = max(1, connections // 1000)
    with database(tokens_needed) as seeded:
        server = start_server(
            seeded.env,
            CLUSTERPORT_AGENT_TOKEN_RATE="100000",
            CLUSTERPORT_AGENT_TOKEN_BURST="100000",
        )
        bare_port = free_port()
        bare = subprocess.Popen(
            [sys.executable, "-m", "bench.agent_bare_ws", str(bare_port)], cwd=ROOT
        )
        try:
            time.sleep(1.5)
            results = {}
            # Baseline first.
            before = settle(bare.pid)
            plain = await open_plain(f"ws://127.0.0.1:{bare_port}/", connections)
            after = settle(bare.pid)
            results["bare websockets"] = (after - before) / connections
            for ws in plain:
                await ws.close()
            del plain
            gc.collect()

            before = settle(server.pid)
            url = f"ws://127.0.0.1:{server.agent_port}/agent/connect"
            started = time.monotonic()
            held = await open_agents(url, seeded.agent_tokens, connections)
            took = time.monotonic() - started
            after = settle(server.pid)
            results["clusterport agent server"] = (after - before) / connections
            print(
                f"{connections} agent connections opened in {took:.1f} s "
                f"({connections / took:.0f}/s, auth + HELLO + registry)"
            )
            for name, per in results.items():
                print(f"{name:>26}: {per / 1024:6.1f} KiB per idle connection")
            ratio = results["clusterport agent server"] / results["bare websockets"]
            print(f"{'ratio':>26}: {ratio:.2f}x the bare websockets server")
            for ws, _session in held:
                await ws.close()
        finally:
            server.stop()
            bare.terminate()
            bare.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=10_000)
    args = parser.parse_args()
    uvloop.run(run(args.connections))


if __name__ == "__main__":
    main()
