"""Pull-based GitOps for workers: `POST /agent-apply/agents/{id}` sends rendered objects down the
agent's tunnel on an `apply` stream (on the replica holding it, routed like the proxy) and relays
the agent's NDJSON results, one line per object and a closing `done` line.

Only clusterport's own worker credential may use it: the agent applies with its own identity.
The agent is trusted with nothing, so each line is checked and rewritten from known fields
(`app.tunnel.apply.check_line`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import Counter

from app.agent_server.proxy import (
    ROUTED_HEADER,
    WORKER,
    bad_reply,
    parse_agent_id,
    parse_reply,
    reset_error,
    upload_body,
)
from app.agent_server.status import HOP_AGENT, HOP_ROUTING, HOP_SERVER, status_response
from app.tunnel.apply import APPLY_KIND, CAPABILITY, MAX_LINE, check_line
from app.tunnel.frames import ResetCode
from app.tunnel.session import Session, SessionClosed, StreamReset

if TYPE_CHECKING:
    from app.agent_server.proxy import KubeProxyHandler

APPLY_PREFIX = "/agent-apply/agents/"
APPLY_STREAMS = Counter(
    "clusterport_agent_apply_streams_total", "GitOps apply streams", ["route", "outcome"]
)


class ApplyHandler:
    def __init__(self, proxy: KubeProxyHandler) -> None:
        self.proxy = proxy

    async def handle(self, request: web.Request) -> web.StreamResponse:
        agent_id = parse_agent_id(request.match_info["agent"])
        if agent_id is None:
            return status_response(404, "agent_not_found", "no such agent", HOP_SERVER)
        outcome = await self.proxy.authorize(request, agent_id)
        if isinstance(outcome, web.Response):
            return outcome
        if outcome != WORKER:
            # The agent applies with its own rights: only clusterport's workers may ask it to.
            return status_response(
                403,
                "worker_credential_required",
                "only clusterport's workers may apply through the agent",
                HOP_SERVER,
            )
        connection = self.proxy.server.pick_connection(agent_id)
        if connection is not None:
            return await self._through_tunnel(request, agent_id, connection.session)
        if request.headers.get(ROUTED_HEADER):
            APPLY_STREAMS.labels("routed", "agent_gone").inc()
            return status_response(
                503,
                "agent_not_connected",
                f"agent {agent_id} is no longer connected to this replica",
                HOP_ROUTING,
            )
        return await self.proxy.route(request, agent_id, outcome)

    async def _through_tunnel(
        self, request: web.Request, agent_id: int, session: Session
    ) -> web.StreamResponse:
        if CAPABILITY not in session.peer.capabilities:
            APPLY_STREAMS.labels("local", "capability_missing").inc()
            return status_response(
                409,
                "capability_missing",
                f"agent {agent_id} does not offer {CAPABILITY} (an older agent, or turned off); "
                "deploy through the Kubernetes API proxy",
                HOP_AGENT,
            )
        try:
            stream = await session.open_stream(json.dumps({"kind": APPLY_KIND}).encode())
        except SessionClosed:
            APPLY_STREAMS.labels("local", "agent_gone").inc()
            return status_response(
                503, "agent_not_connected", f"agent {agent_id} disconnected", HOP_AGENT
            )
        upload = asyncio.create_task(upload_body(request, stream))
        response: web.StreamResponse | None = None
        try:
            reply = parse_reply(await stream.read_headers())
            if reply is None or reply[0] != 200:
                await stream.reset(ResetCode.MALFORMED, "malformed HEADERS")
                APPLY_STREAMS.labels("local", "bad_reply").inc()
                return bad_reply(agent_id, "a malformed reply")
            response = web.StreamResponse(status=200)
            response.content_type = "application/x-ndjson"
            await response.prepare(request)
            buffer = b""
            done = False
            while not done and (chunk := await stream.read()):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                if len(buffer) > MAX_LINE:
                    lines.append(b"")  # a line that long is not a result: malformed
                for line in lines:
                    checked = check_line(line)
                    if checked is None:
                        await stream.reset(ResetCode.MALFORMED, "malformed result line")
                        APPLY_STREAMS.labels("local", "bad_reply").inc()
                        await response.write(_error_line("agent_bad_response"))
                        await response.write_eof()
                        return response
                    await response.write(json.dumps(checked).encode() + b"\n")
                    if checked["result"] == "done":
                        done = True
                        break
            await response.write_eof()
            APPLY_STREAMS.labels("local", "ok" if done else "incomplete").inc()
            return response
        except StreamReset as exc:
            failure = reset_error(exc, agent_id)
            APPLY_STREAMS.labels("local", failure[1]).inc()
            if response is None:
                return status_response(*failure)
            await response.write(_error_line(failure[1]))
            await response.write_eof()
            return response
        except asyncio.CancelledError:
            await stream.reset(ResetCode.CANCEL, "client disconnected")
            raise
        except ConnectionResetError:
            await stream.reset(ResetCode.CANCEL, "client disconnected")
            APPLY_STREAMS.labels("local", "client_gone").inc()
            return response or web.Response(status=499)
        finally:
            upload.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await upload
            # Whatever the agent still sends after its `done` line is not read: drop the stream.
            await stream.reset(ResetCode.CANCEL, "apply finished")


def _error_line(code: str) -> bytes:
    return json.dumps({"result": "error", "code": code}).encode() + b"\n"
