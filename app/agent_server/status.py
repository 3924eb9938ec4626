"""Kubernetes `Status` error bodies that name the hop that failed."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

# Where a proxied request failed, from the client's side outwards.
HOP_SERVER = "agent-server"
HOP_ROUTING = "agent-server-routing"
HOP_AGENT = "agent"
HOP_KUBE = "kube-apiserver"

# Our code for the failure, for clients that are not kubectl (clusterport's workers read it: see
# app/kube/errors.py) so a hop's failure is never taken for the kube-apiserver's answer.
ERROR_HEADER = "X-Clusterport-Error"

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    429: "TooManyRequests",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def status_body(status: int, code: str, message: str, hop: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f"clusterport {hop}: {message}",
        "reason": _REASONS.get(status, "InternalError"),
        "details": {"causes": [{"reason": code, "message": message, "field": f"hop={hop}"}]},
        "code": status,
    }


def status_response(
    status: int, code: str, message: str, hop: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = status_body(status, code, message, hop)
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", ERROR_HEADER: code, **(headers or {})},
    )
