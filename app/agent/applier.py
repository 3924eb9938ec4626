"""Serves `apply` streams: pull-based GitOps. The server sends rendered objects; the agent
applies them in-cluster with its own identity (server-side apply, in the engine's wave order)
and streams one NDJSON result line per object back, then a closing `done` line."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from prometheus_client import Counter

from app.agent.proxy import KubeProxy
from app.gitops_engine.health import assess
from app.gitops_engine.manifests import ObjectRef
from app.gitops_engine.order import waves
from app.tunnel.frames import ResetCode
from app.tunnel.session import SessionClosed, Stream, StreamReset

APPLY_STREAMS = Counter(
    "clusterport_agent_gitops_apply_streams_total", "GitOps apply streams served", ["outcome"]
)
APPLIED_OBJECTS = Counter(
    "clusterport_agent_gitops_objects_total", "Objects applied in-cluster", ["result"]
)
MAX_BODY = 64 * 1024 * 1024
MAX_CRD_WAIT = 30.0
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=60, connect=10, sock_connect=10)
_APPLY_TYPE = "application/apply-patch+yaml"

# The codes and fixed messages of app/kube/errors.py (the agent does not load the kubernetes
# client; tests/agents/test_applier.py checks that the two tables agree).
_BY_STATUS = {
    400: "invalid",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    410: "conflict",
    422: "invalid",
    429: "rate_limited",
    504: "timeout",
}
MESSAGES = {
    "invalid": "The Kubernetes API refused the object as invalid.",
    "unauthorized": "The Kubernetes API rejected the token (invalid, expired or revoked).",
    "forbidden": "The token is not allowed to do this (Kubernetes RBAC).",
    "not_found": "The Kubernetes object does not exist.",
    "conflict": "The Kubernetes object already exists or was changed concurrently.",
    "rate_limited": "The Kubernetes API is throttling requests.",
    "timeout": "The Kubernetes API did not answer in time.",
    "server_error": "The Kubernetes API failed with a server error.",
    "unexpected_response": "The Kubernetes API answered with a response we do not follow "
    "(e.g. a redirect).",
    "unreachable": "The Kubernetes API could not be reached.",
}


def code_for_status(status: int) -> str:
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if status >= 500:
        return "server_error"
    if 400 <= status < 500:
        return "invalid"
    return "unexpected_response"


class ApplyFailure(Exception):
    """One request to the kube-apiserver failed; `code` is one of app/kube's codes."""

    def __init__(self, code: str, status: int | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.status = status


@dataclass(frozen=True)
class Resource:
    plural: str
    namespaced: bool


@dataclass(frozen=True)
class ApplyRequest:
    objects: list[dict[str, Any]]
    field_manager: str
    wait_crds: float

    @classmethod
    def parse(cls, body: bytes) -> ApplyRequest:
        data = json.loads(body)
        objects = data["objects"]
        manager = data.get("field_manager", "clusterport")
        wait = data.get("wait_crds", 0)
        if not isinstance(objects, list) or not isinstance(manager, str) or not manager:
            raise TypeError("objects")
        if type(wait) not in (int, float) or wait < 0:
            raise TypeError("wait_crds")
        for obj in objects:
            ObjectRef.of(obj)  # raises on an object without apiVersion, kind or name
        return cls(objects, manager, min(float(wait), MAX_CRD_WAIT))


class Applier:
    """One per agent process; shares the proxy's pooled client and credentials. Discovery is
    cached per apiVersion and looked up again when a kind is missing (a CRD just created)."""

    def __init__(self, proxy: KubeProxy) -> None:
        self.proxy = proxy
        self._discovered: dict[str, dict[str, Resource]] = {}

    async def handle(self, stream: Stream) -> None:
        try:
            request = ApplyRequest.parse(await _read_body(stream))
        except StreamReset:
            APPLY_STREAMS.labels("cancelled").inc()
            return
        except (ValueError, KeyError, TypeError, AttributeError):
            APPLY_STREAMS.labels("bad_request").inc()
            await stream.reset(ResetCode.BAD_REQUEST, "malformed apply request")
            return
        head = {"status": 200, "headers": [["Content-Type", "application/x-ndjson"]]}
        try:
            await stream.send_headers(json.dumps(head).encode())
            outcome = await self._apply(stream, request)
        except (StreamReset, SessionClosed):
            # The server gave up on this stream (its worker went away): stop applying.
            APPLY_STREAMS.labels("cancelled").inc()
            return
        APPLY_STREAMS.labels(outcome).inc()

    async def _apply(self, stream: Stream, request: ApplyRequest) -> str:
        """Apply wave by wave, one line per object; stops at the first refusal."""
        for index, wave in enumerate(waves(request.objects)):
            for obj in wave:
                ref = ObjectRef.of(obj)
                try:
                    await self.apply_one(obj, request.field_manager)
                except ApplyFailure as exc:
                    APPLIED_OBJECTS.labels("failed").inc()
                    await _send(
                        stream,
                        {
                            "ref": ref.to_dict(),
                            "result": "failed",
                            "code": exc.code,
                            "status": exc.status,
                            "message": MESSAGES.get(exc.code, MESSAGES["server_error"]),
                        },
                    )
                    await _send(stream, {"result": "done", "waiting_for_crds": False}, end=True)
                    return "refused"
                APPLIED_OBJECTS.labels("applied").inc()
                await _send(stream, {"ref": ref.to_dict(), "result": "applied"})
            if index == 0:
                crds = [o for o in wave if o["kind"] == "CustomResourceDefinition"]
                try:
                    established = await self.crds_established(crds, request.wait_crds)
                except ApplyFailure:
                    established = False
                if not established:
                    await _send(stream, {"result": "done", "waiting_for_crds": True}, end=True)
                    return "waiting_for_crds"
        await _send(stream, {"result": "done", "waiting_for_crds": False}, end=True)
        return "ok"

    async def apply_one(self, obj: dict[str, Any], field_manager: str) -> None:
        """Server-side apply of `obj`, taking over conflicting fields; strict field validation
        (an unknown or duplicated field is refused), as the worker's applier does."""
        meta = obj["metadata"]
        resource = await self.resource(str(obj["apiVersion"]), str(obj["kind"]))
        if resource is None:
            raise ApplyFailure("not_found", 404)
        path = _path(str(obj["apiVersion"]), resource, str(meta.get("namespace") or ""))
        path += f"/{quote(str(meta['name']), safe='')}"
        query = {"fieldManager": field_manager, "force": "true", "fieldValidation": "Strict"}
        status, data = await self._request("PATCH", path, query, json.dumps(obj).encode())
        if not 200 <= status <= 299:
            code = _apply_code(status, data)
            raise ApplyFailure(code, 422 if code == "invalid" and status == 500 else status)

    async def resource(self, api_version: str, kind: str) -> Resource | None:
        cached = self._discovered.get(api_version)
        if cached is not None and kind in cached:
            return cached[kind]
        found = await self._discover(api_version)
        return found.get(kind)

    async def _discover(self, api_version: str) -> dict[str, Resource]:
        path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        status, data = await self._request("GET", path)
        if status == 404:
            listing: dict[str, Any] = {}
        elif 200 <= status <= 299:
            try:
                listing = json.loads(data)
            except ValueError:
                raise ApplyFailure("server_error", 502) from None
        else:
            raise ApplyFailure(code_for_status(status), status)
        found = {
            str(r["kind"]): Resource(str(r["name"]), bool(r["namespaced"]))
            for r in listing.get("resources", [])
            if "/" not in str(r.get("name", ""))
        }
        self._discovered[api_version] = found
        return found

    async def crds_established(self, crds: list[dict[str, Any]], wait: float) -> bool:
        """Wait (at most `wait` seconds) until every CRD is established, then forget the
        discovery of their groups so their kinds are found."""
        deadline = time.monotonic() + wait
        delay = 0.05
        for crd in crds:
            name = quote(str(crd["metadata"]["name"]), safe="")
            path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
            while True:
                status, data = await self._request("GET", path)
                try:
                    live = json.loads(data) if status == 200 else None
                except ValueError:
                    live = None
                if live is not None and assess(live).done:
                    break
                if time.monotonic() + delay > deadline:
                    return False
                # Polling the API server: a watch would cost more for the second or two this
                # usually takes.
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
        for crd in crds:
            spec = crd.get("spec") or {}
            for version in spec.get("versions") or []:
                self._discovered.pop(f"{spec.get('group')}/{version.get('name')}", None)
        return True

    async def _request(
        self, method: str, path: str, query: dict[str, str] | None = None, body: bytes | None = None
    ) -> tuple[int, bytes]:
        headers = {"Accept": "application/json", **self.proxy.auth_headers()}
        if body is not None:
            headers["Content-Type"] = _APPLY_TYPE
        try:
            async with self.proxy.client.request(
                method,
                self.proxy.target.base_url + path,
                params=query,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=REQUEST_TIMEOUT,
            ) as resp:
                return resp.status, await resp.read()
        except TimeoutError:
            raise ApplyFailure("timeout") from None
        except (aiohttp.ClientError, OSError):
            raise ApplyFailure("unreachable") from None


def _path(api_version: str, resource: Resource, namespace: str) -> str:
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if resource.namespaced:
        base += f"/namespaces/{quote(namespace, safe='')}"
    return f"{base}/{resource.plural}"


def _apply_code(status: int, data: bytes) -> str:
    """Server-side apply answers 500 when a field has the wrong type: an invalid object, not a
    server failure. The body is read only to tell the two apart; nothing of it is kept."""
    if status == 500 and data:
        try:
            message = str(json.loads(data).get("message", ""))
        except (ValueError, AttributeError):
            message = ""
        if message.startswith("failed to create typed patch object"):
            return "invalid"
    return code_for_status(status)


async def _read_body(stream: Stream) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.read():
        size += len(chunk)
        if size > MAX_BODY:
            raise ValueError("apply request too large")
        chunks.append(chunk)
    return b"".join(chunks)


async def _send(stream: Stream, line: dict[str, Any], *, end: bool = False) -> None:
    await stream.write(json.dumps(line).encode() + b"\n", end=end)
