"""Any object by apiVersion and kind: discovery, server-side apply, get and delete.

The typed group APIs of `KubeClient` cover the kinds clusterport itself manages; rendered
manifests can hold any kind (CRD instances included), so these calls find the resource through
discovery and speak to its REST path directly.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import urllib3
from kubernetes.client.exceptions import ApiException

from app.kube.errors import (
    KubeError,
    KubeInvalidError,
    KubeNotFoundError,
    error_for_status,
    translate,
)

_TRANSLATED = (ApiException, urllib3.exceptions.HTTPError, OSError)


_APPLY = "application/apply-patch"


def _apply_error(status: int, data: bytes | None) -> KubeError:
    """Server-side apply answers 500 when a field has the wrong type (a number where the schema
    wants a string): that is an invalid object, not a server failure. The body is read only
    to tell the two apart; nothing of it is kept."""
    if status == 500 and data:
        try:
            message = str(json.loads(data).get("message", ""))
        except (ValueError, AttributeError):
            message = ""
        if message.startswith("failed to create typed patch object"):
            return KubeInvalidError(422)
    return error_for_status(status)


@dataclass(frozen=True)
class Resource:
    """Where a kind lives: `/apis/<group_version>/[namespaces/<ns>/]<plural>`."""

    group_version: str
    kind: str
    plural: str
    namespaced: bool

    def path(self, namespace: str, name: str | None = None) -> str:
        base = "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"
        if self.namespaced:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        return base + (f"/{quote(name, safe='')}" if name else "")


class Dynamic:
    """Discovery is cached per client (one request per apiVersion); call `forget(gv)` when a
    CRD was just created so its kinds are looked up again."""

    def __init__(self, api_client: Any) -> None:
        self._api = api_client
        self._lock = threading.Lock()
        self._discovered: dict[str, dict[str, Resource]] = {}

    def _request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        resource_path = path + (f"?{urlencode(query)}" if query else "")
        try:
            request = self._api.param_serialize(
                method=method,
                resource_path=resource_path,
                header_params={"Accept": "application/json", "Content-Type": content_type},
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self._api.call_api(*request)
            data = response.read()
        except KubeError:
            raise
        except _TRANSLATED as exc:
            raise translate(exc) from exc
        status = int(response.status)
        if not 200 <= status <= 299:
            if content_type.startswith(_APPLY):
                raise _apply_error(status, data)
            raise error_for_status(status)
        try:
            parsed: dict[str, Any] = json.loads(data) if data else {}
        except ValueError:
            raise error_for_status(502) from None
        return parsed

    def resources(self, group_version: str) -> dict[str, Resource]:
        """Kinds served in `group_version` (empty when the group/version is not served)."""
        with self._lock:
            cached = self._discovered.get(group_version)
        if cached is not None:
            return cached
        path = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        try:
            listing = self._request("GET", path)
        except KubeNotFoundError:
            listing = {}
        found = {
            str(r["kind"]): Resource(
                group_version, str(r["kind"]), str(r["name"]), bool(r["namespaced"])
            )
            for r in listing.get("resources", [])
            if "/" not in str(r.get("name", ""))
        }
        with self._lock:
            self._discovered[group_version] = found
        return found

    def forget(self, group_version: str) -> None:
        with self._lock:
            self._discovered.pop(group_version, None)

    def resource(self, api_version: str, kind: str) -> Resource | None:
        return self.resources(api_version).get(kind)

    def _require(self, api_version: str, kind: str) -> Resource:
        resource = self.resource(api_version, kind)
        if resource is None:
            raise KubeNotFoundError(404)
        return resource

    def apply(self, obj: dict[str, Any], field_manager: str) -> dict[str, Any]:
        """Server-side apply of `obj` as `field_manager`, taking over conflicting fields."""
        meta = obj["metadata"]
        resource = self._require(str(obj["apiVersion"]), str(obj["kind"]))
        return self._request(
            "PATCH",
            resource.path(str(meta.get("namespace") or ""), str(meta["name"])),
            # Strict: an unknown or duplicated field is refused, not silently dropped.
            query={"fieldManager": field_manager, "force": "true", "fieldValidation": "Strict"},
            body=obj,
            content_type="application/apply-patch+yaml",
        )

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The live object, or None when it (or its kind) does not exist."""
        resource = self.resource(api_version, kind)
        if resource is None:
            return None
        try:
            return self._request("GET", resource.path(namespace, name))
        except KubeNotFoundError:
            return None

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Delete in the background (dependents by the garbage collector); False when absent."""
        resource = self.resource(api_version, kind)
        if resource is None:
            return False
        try:
            self._request(
                "DELETE",
                resource.path(namespace, name),
                body={
                    "kind": "DeleteOptions",
                    "apiVersion": "v1",
                    "propagationPolicy": "Background",
                },
            )
        except KubeNotFoundError:
            return False
        return True
