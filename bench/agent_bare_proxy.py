"""Baseline for the proxy benchmark: a bare aiohttp reverse proxy in front of kube-apiserver."""

from __future__ import annotations

import ssl
import sys

import aiohttp
import uvloop
from aiohttp import web

HOP = {"connection", "keep-alive", "transfer-encoding", "upgrade", "host", "authorization"}


async def app(upstream: str, token: str, ca_file: str) -> web.Application:
    context = ssl.create_default_context(cafile=ca_file)
    client = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=context, limit=0), auto_decompress=False
    )

    async def forward(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        headers["Authorization"] = f"Bearer {token}"
        async with client.request(
            request.method, upstream + request.raw_path, headers=headers, allow_redirects=False
        ) as resp:
            response = web.StreamResponse(status=resp.status)
            for k, v in resp.headers.items():
                if k.lower() not in HOP:
                    response.headers.add(k, v)
            await response.prepare(request)
            async for chunk in resp.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    application = web.Application()
    application.router.add_route("*", "/{tail:.*}", forward)
    return application


if __name__ == "__main__":
    port, upstream, token, ca_file = sys.argv[1:5]
    uvloop.install()
    web.run_app(app(upstream, token, ca_file), host="127.0.0.1", port=int(port), access_log=None)
