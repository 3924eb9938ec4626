"""One client object for every Kubernetes API group clusterport uses, safe to point at user URLs.

`KubeClient.from_platform` resolves the cluster URL through the SSRF guard, connects to the
pinned address while verifying TLS against the cluster's CA and original host name, follows no
redirects, applies timeouts, retries with backoff only on 429, 5xx and connection failures, and
turns every failure into a `KubeError` with a code. Use it from workers only, never in a request.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from app.core.ssrf import resolve_target
from app.kube.dynamic import Dynamic
from app.kube.errors import KubeError, KubeUnexpectedResponseError, translate

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
MAX_ATTEMPTS = 4
BACKOFF_BASE = 0.25
BACKOFF_CAP = 4.0
RETRY_AFTER_CAP = 10.0

# A POST that failed with a 5xx or mid-response may have been applied; only requests that are
# safe to repeat retry those. Every method retries 429 and refused connections (nothing was done).
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_TRANSLATED = (ApiException, urllib3.exceptions.HTTPError, OSError)
_GIT_VERSION = re.compile(r"v?[0-9]+\.[0-9]+[0-9A-Za-z.+_-]*")


@dataclass(frozen=True)
class KubeVersion:
    git_version: str
    major: str
    minor: str
    platform: str


class _NoRedirectPoolManager(urllib3.PoolManager):
    """urllib3 pool that never follows a redirect and always applies a timeout."""

    def __init__(self, timeout: urllib3.Timeout, **kw: Any) -> None:
        super().__init__(**kw)
        self._default_timeout = timeout

    def urlopen(  # type: ignore[override]
        self, method: str, url: str, redirect: bool = True, **kw: Any
    ) -> urllib3.BaseHTTPResponse:
        if kw.get("timeout") is None:
            kw["timeout"] = self._default_timeout
        return super().urlopen(method, url, redirect=False, **kw)


class KubeOnEventLoopError(RuntimeError):
    """A Kubernetes call was made on a thread running an asyncio event loop (a web request)."""


def _refuse_event_loop() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return  # a worker thread: fine
    raise KubeOnEventLoopError(
        "Kubernetes calls belong in workers: enqueue an actor instead of calling the cluster "
        "from a request."
    )


class _RetryingApiClient(k8s.ApiClient):
    """ApiClient whose every request retries transient failures with jittered backoff, and
    which refuses to run on an event loop (a blocking call there would stall every request)."""

    def __init__(self, configuration: k8s.Configuration, max_attempts: int) -> None:
        super().__init__(configuration)
        self.max_attempts = max_attempts
        self.user_agent = "clusterport"

    def call_api(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        _refuse_event_loop()
        method = method.upper()
        attempt = 0
        while True:
            attempt += 1
            last = attempt >= self.max_attempts
            try:
                response: Any = super().call_api(method, url, *args, **kwargs)
            except urllib3.exceptions.NewConnectionError:
                if last:
                    raise
                _sleep_backoff(attempt)
                continue
            except (urllib3.exceptions.ProtocolError, urllib3.exceptions.TimeoutError):
                if last or method not in _IDEMPOTENT:
                    raise
                _sleep_backoff(attempt)
                continue
            status = int(response.status)
            retry = status == 429 or (status >= 500 and method in _IDEMPOTENT)
            if not retry or last:
                return response
            delay = _retry_after(response.getheader("Retry-After"))
            response.read()  # drain it so the connection goes back to the pool
            _sleep_backoff(attempt, delay)


def _sleep_backoff(attempt: int, at_least: float | None = None) -> None:
    delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)  # noqa: S311
    time.sleep(max(delay, at_least or 0.0))


def _retry_after(value: str | None) -> float | None:
    try:
        return min(RETRY_AFTER_CAP, max(0.0, float(value))) if value else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


class _Guarded:
    """Wraps a generated API object so every call raises `KubeError` instead of client errors."""

    def __init__(self, api: object) -> None:
        self._api = api

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._api, name)
        if not callable(attr):
            return attr
        return _guard(attr)


def _guard(func: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except _TRANSLATED as exc:
            raise translate(exc) from exc

    return call


class KubeClient:
    """Every API group from one object: `core`, `rbac`, `apps`, `networking`, `apiextensions`,
    `custom_objects` (any CRD group), `objects` (any kind by apiVersion/kind, server-side
    apply), plus discovery and `version()`. Methods of the group
    properties are the official client's (`create_namespace`, `read_namespaced_secret`, ...) and
    take dicts as bodies; they raise `KubeError` subclasses."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self._api_client: Any = api_client
        self.core = _Guarded(k8s.CoreV1Api(api_client))
        self.rbac = _Guarded(k8s.RbacAuthorizationV1Api(api_client))
        self.apps = _Guarded(k8s.AppsV1Api(api_client))
        self.batch = _Guarded(k8s.BatchV1Api(api_client))  # Jobs (add-on installs)
        self.networking = _Guarded(k8s.NetworkingV1Api(api_client))
        self.apiextensions = _Guarded(k8s.ApiextensionsV1Api(api_client))
        self.custom_objects = _Guarded(k8s.CustomObjectsApi(api_client))
        self._version = _Guarded(k8s.VersionApi(api_client))
        self._apis = _Guarded(k8s.ApisApi(api_client))
        self._core_api = _Guarded(k8s.CoreApi(api_client))
        # Any kind by apiVersion/kind (rendered manifests): apply, get, delete, discovery.
        self.objects = Dynamic(api_client)

    @classmethod
    def from_platform(
        cls,
        api_url: str,
        ca_pem: str | None,
        token: str,
        *,
        allow_local: bool,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> KubeClient:
        """Connect to a cluster's API. Resolves and checks the URL (blocking DNS) and raises
        `UnsafeURLError` before any connection when it points somewhere it must not."""
        target = resolve_target(api_url, allow_local=allow_local)
        path = urlsplit(api_url).path.rstrip("/")
        config = k8s.Configuration(host=f"https://{target.pinned_netloc}{path}")
        config.ca_cert_data = ca_pem or None  # None: the system's trust store
        # We dial the pinned IP but speak TLS to, and check the certificate for, the host name.
        config.tls_server_name = target.host
        config.assert_hostname = target.host  # type: ignore[assignment]  # urllib3 takes a name
        config.api_key = {"BearerToken": token}
        return cls._connect(config, connect_timeout, read_timeout, max_attempts)

    @classmethod
    def through_agent(
        cls,
        proxy_url: str,
        agent_id: int,
        credential: Callable[[], str],
        *,
        ca_file: str | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> KubeClient:
        """Reach a cluster through its agent: requests go to the agent server's Kubernetes API
        proxy (`proxy_url`, any replica: it routes to the one holding the agent), which sends
        them down the agent's tunnel. `credential()` gives the bearer credential and is called
        before every request, so short-lived credentials stay fresh. No SSRF check: the proxy
        URL is an operator setting and the agent's API server address is not user-chosen."""
        config = k8s.Configuration(host=f"{proxy_url.rstrip('/')}/k8s-proxy/agents/{agent_id}")
        config.ssl_ca_cert = ca_file  # None: the system's trust store

        def refresh(configuration: k8s.Configuration) -> None:
            configuration.api_key = {"BearerToken": credential()}

        config.refresh_api_key_hook = refresh  # type: ignore[assignment]  # typed as None
        refresh(config)  # the client sends the header only when a key is already set
        return cls._connect(config, connect_timeout, read_timeout, max_attempts)

    @classmethod
    def _connect(
        cls,
        config: k8s.Configuration,
        connect_timeout: float,
        read_timeout: float,
        max_attempts: int,
    ) -> KubeClient:
        config.proxy = None  # never through a proxy taken from the environment
        config.verify_ssl = True
        config.retries = False  # retries are ours (see _RetryingApiClient)
        config.api_key_prefix = {"BearerToken": "Bearer"}
        config.connection_pool_maxsize = 4
        api_client = _RetryingApiClient(config, max_attempts)
        rest = api_client.rest_client
        rest.pool_manager = _NoRedirectPoolManager(
            urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            **rest.pool_manager.connection_pool_kw,
        )
        return cls(api_client)

    def close(self) -> None:
        self._api_client.close()

    def __enter__(self) -> KubeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def version(self) -> KubeVersion:
        try:
            info = self._version.get_code()
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            # The body is not a version object (the client's model refused it).
            raise KubeUnexpectedResponseError() from exc
        fields = (info.git_version, info.major, info.minor, info.platform)
        readable = all(isinstance(f, str) and len(f) <= 64 for f in fields)
        if not readable or not _GIT_VERSION.fullmatch(info.git_version):
            raise KubeUnexpectedResponseError()
        return KubeVersion(
            git_version=info.git_version,
            major=info.major,
            minor=info.minor,
            platform=info.platform,
        )

    def api_group_versions(self) -> list[str]:
        """Every served `group/version` (core's `v1` first), CRD groups included."""
        core = self._core_api.get_api_versions()
        groups = self._apis.get_api_versions()
        return list(core.versions) + [v.group_version for g in groups.groups for v in g.versions]

    def api_resources(self, group_version: str) -> list[dict[str, Any]]:
        """Discovery of one group/version: `name`, `kind`, `namespaced` of each resource."""
        path = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        result = _guard(self._get_resource_list)(path)
        return [
            {"name": r.name, "kind": r.kind, "namespaced": r.namespaced}
            for r in result.resources
            if "/" not in r.name  # subresources such as pods/log
        ]

    def _get_resource_list(self, path: str) -> Any:
        api: Any = self._api_client
        request = api.param_serialize(
            method="GET",
            resource_path=path,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        response = api.call_api(*request)
        response.read()
        return api.response_deserialize(
            response_data=response, response_types_map={"200": "V1APIResourceList"}
        ).data


__all__ = ["KubeClient", "KubeError", "KubeOnEventLoopError", "KubeVersion"]
