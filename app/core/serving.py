"""Running several ASGI servers (API, health, agent server) in one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable
from typing import Any

import uvicorn
from starlette.types import ASGIApp

log = logging.getLogger("clusterport")


class _Server(uvicorn.Server):
    # One process runs several servers; the process-wide signal handler below stops them all.
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def make_server(app: ASGIApp, host: str, port: int, **options: object) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="off",
        **options,  # type: ignore[arg-type]
    )
    return _Server(config)


async def run_servers(
    servers: Iterable[uvicorn.Server],
    tasks: Iterable[Callable[[asyncio.Event], Coroutine[Any, Any, None]]] = (),
    on_started: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM; `tasks` get an event that is set on shutdown.

    `on_started` runs once every server listens (the process's one startup banner).
    """
    servers = list(servers)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def request_stop() -> None:
        stop.set()
        for server in servers:
            server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, request_stop)
    running = [asyncio.create_task(server.serve()) for server in servers]
    running += [asyncio.create_task(task(stop)) for task in tasks]

    async def announce() -> None:
        while not all(server.started for server in servers):  # noqa: ASYNC110 - uvicorn sets a flag
            await asyncio.sleep(0.05)
        if on_started is not None:
            await on_started()

    announcer = asyncio.create_task(announce())
    done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
    announcer.cancel()
    request_stop()
    await asyncio.gather(*running, announcer, return_exceptions=True)
    log.info("clusterport stopped")
    for task in done:
        if task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
