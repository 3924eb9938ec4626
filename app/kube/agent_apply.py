"""Pull-based apply: the agent server's `POST /agent-apply/agents/{id}` hands rendered objects
to the cluster's agent, which applies them in-cluster with its own identity; the reply is one
NDJSON line per object, then a `done` line. Failures come back as our typed `KubeError`s."""

from __future__ import annotations

import functools
import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from app.kube.errors import (
    TUNNEL_ERROR_HEADER,
    KubeAgentBadResponseError,
    KubeAgentUnavailableError,
    KubeError,
    KubeTimeoutError,
    KubeUnreachableError,
    error_for_code,
    error_for_status,
    error_for_tunnel_code,
)

CONNECT_TIMEOUT = 5.0
# Between two result lines: one server-side apply, or the agent's bounded wait for CRDs.
READ_TIMEOUT = 60.0


class AgentApplyUnsupportedError(Exception):
    """The agent does not offer the `gitops-apply` capability: use the proxy path."""


@dataclass(frozen=True)
class AppliedObject:
    ref: dict[str, str]
    error: KubeError | None = None


@dataclass
class AgentApplyResult:
    objects: list[AppliedObject] = field(default_factory=list)
    waiting_for_crds: bool = False


def apply_through_agent(
    proxy_url: str,
    agent_id: int,
    credential: str,
    objects: list[dict[str, Any]],
    field_manager: str,
    *,
    wait_crds: float,
    ca_file: str | None = None,
) -> AgentApplyResult:
    """Apply `objects` through the agent; stops at the first refused object (its error is on
    the last entry). Raises `AgentApplyUnsupportedError`, or `KubeError` when the request
    itself fails (agent gone, tunnel broken, malformed reply)."""
    url = f"{proxy_url.rstrip('/')}/agent-apply/agents/{agent_id}"
    body = {"objects": objects, "field_manager": field_manager, "wait_crds": wait_crds}
    timeout = httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)
    try:
        with (
            httpx.Client(
                verify=_ssl_context(ca_file),
                trust_env=False,
                timeout=timeout,
                follow_redirects=False,
            ) as client,
            client.stream(
                "POST",
                url,
                content=json.dumps(body).encode(),
                headers={
                    "Authorization": f"Bearer {credential}",
                    "Content-Type": "application/json",
                },
            ) as response,
        ):
            if response.status_code != 200:
                raise _refusal(response)
            return _read_results(response.iter_lines())
    except httpx.TimeoutException:
        raise KubeTimeoutError() from None
    except httpx.TransportError:
        raise KubeUnreachableError() from None


@functools.lru_cache(maxsize=8)
def _ssl_context(ca_file: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)


def _refusal(response: httpx.Response) -> Exception:
    code = response.headers.get(TUNNEL_ERROR_HEADER)
    if code == "capability_missing":
        return AgentApplyUnsupportedError(code)
    if code:
        return error_for_tunnel_code(code, response.status_code)
    return error_for_status(response.status_code)


def _read_results(lines: Iterator[str]) -> AgentApplyResult:
    result = AgentApplyResult()
    for raw in lines:
        if not raw:
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            raise KubeAgentBadResponseError(502) from None
        outcome = line.get("result") if isinstance(line, dict) else None
        if outcome == "done":
            result.waiting_for_crds = bool(line.get("waiting_for_crds"))
            return result
        if outcome == "error":
            raise error_for_tunnel_code(str(line.get("code")), 502)
        ref = line.get("ref") if outcome in ("applied", "failed") else None
        if not isinstance(ref, dict):
            raise KubeAgentBadResponseError(502)
        error = None
        if outcome == "failed":
            error = error_for_code(str(line.get("code")), line.get("status"))
        result.objects.append(AppliedObject({str(k): str(v) for k, v in ref.items()}, error))
    # The reply ended without its `done` line: the stream broke on the way.
    raise KubeAgentUnavailableError()
