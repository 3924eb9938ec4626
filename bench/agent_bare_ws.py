"""Baseline for the idle-connection benchmark: a bare `websockets` server holding connections."""

from __future__ import annotations

import asyncio
import sys

from websockets.asyncio.server import ServerConnection, serve


async def hold(ws: ServerConnection) -> None:
    await ws.wait_closed()


async def main(port: int) -> None:
    async with serve(hold, "127.0.0.1", port, compression=None, ping_interval=None):
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
