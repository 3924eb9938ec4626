"""Kubernetes failures as our own typed errors, each with a stable code and a fixed message.

The original exception stays as `__cause__` for logs, with the response body removed first:
nothing a cluster sends back is kept, logged or shown.
"""

from __future__ import annotations

import ssl

import urllib3.exceptions
from kubernetes.client.exceptions import ApiException


class KubeError(Exception):
    """A Kubernetes API call failed. `status` is the HTTP status when the cluster answered."""

    code = "kube_error"
    message = "The Kubernetes API request failed."
    # Worth trying again later (the same request may succeed without any change on our side).
    transient = False

    def __init__(self, status: int | None = None) -> None:
        self.status = status
        suffix = f" (HTTP {status})" if status else ""
        super().__init__(f"{self.code}: {self.message}{suffix}")


class KubeUnreachableError(KubeError):
    code = "unreachable"
    message = "The Kubernetes API could not be reached."
    transient = True


class KubeTLSError(KubeError):
    code = "tls_error"
    message = "The Kubernetes API's TLS certificate could not be verified with the given CA."


class KubeTimeoutError(KubeError):
    code = "timeout"
    message = "The Kubernetes API did not answer in time."
    transient = True


class KubeUnauthorizedError(KubeError):
    code = "unauthorized"
    message = "The Kubernetes API rejected the token (invalid, expired or revoked)."


class KubeForbiddenError(KubeError):
    code = "forbidden"
    message = "The token is not allowed to do this (Kubernetes RBAC)."


class KubeNotFoundError(KubeError):
    code = "not_found"
    message = "The Kubernetes object does not exist."


class KubeConflictError(KubeError):
    code = "conflict"
    message = "The Kubernetes object already exists or was changed concurrently."


class KubeInvalidError(KubeError):
    code = "invalid"
    message = "The Kubernetes API refused the object as invalid."


class KubeRateLimitedError(KubeError):
    code = "rate_limited"
    message = "The Kubernetes API is throttling requests."
    transient = True


class KubeServerError(KubeError):
    code = "server_error"
    message = "The Kubernetes API failed with a server error."
    transient = True


class KubeUnexpectedResponseError(KubeError):
    code = "unexpected_response"
    message = "The Kubernetes API answered with a response we do not follow (e.g. a redirect)."


class KubeAgentNotConnectedError(KubeError):
    code = "agent_not_connected"
    message = "The cluster's agent is not connected to clusterport."
    transient = True


class KubeAgentUnavailableError(KubeError):
    code = "agent_unavailable"
    message = "The request could not travel through the cluster's agent (busy, draining or lost)."
    transient = True


class KubeAgentBadResponseError(KubeError):
    code = "agent_bad_response"
    message = "The cluster's agent answered with a reply clusterport does not accept."
    transient = True


class KubeTunnelRefusedError(KubeError):
    code = "tunnel_refused"
    message = "The agent server refused clusterport's internal credential."


# The agent server's proxy names its own failures in this header (our codes, not cluster text),
# so they are not mistaken for the kube-apiserver's answers.
TUNNEL_ERROR_HEADER = "X-Clusterport-Error"
_BY_TUNNEL_CODE: dict[str, type[KubeError]] = {
    "agent_not_connected": KubeAgentNotConnectedError,
    "agent_busy": KubeAgentUnavailableError,
    "agent_stream_failed": KubeAgentUnavailableError,
    "replica_unreachable": KubeAgentUnavailableError,
    "auth_unavailable": KubeAgentUnavailableError,
    "kube_apiserver_unreachable": KubeUnreachableError,
    "kube_apiserver_timeout": KubeTimeoutError,
    "agent_bad_response": KubeAgentBadResponseError,
    "agent_disconnected": KubeAgentUnavailableError,
}


_BY_STATUS: dict[int, type[KubeError]] = {
    400: KubeInvalidError,
    401: KubeUnauthorizedError,
    403: KubeForbiddenError,
    404: KubeNotFoundError,
    409: KubeConflictError,
    410: KubeConflictError,
    422: KubeInvalidError,
    429: KubeRateLimitedError,
    504: KubeTimeoutError,
}


def error_for_status(status: int) -> KubeError:
    if status in _BY_STATUS:
        return _BY_STATUS[status](status)
    if status >= 500:
        return KubeServerError(status)
    if 400 <= status < 500:
        return KubeInvalidError(status)
    return KubeUnexpectedResponseError(status)


def error_for_tunnel_code(code: str, status: int | None = None) -> KubeError:
    """Our error for a failure the agent server names with its own code."""
    return _BY_TUNNEL_CODE.get(code, KubeTunnelRefusedError)(status)


def error_for_code(code: str, status: int | None = None) -> KubeError:
    """Our error for one of our codes (as the agent reports a refused object)."""
    for kind in _KINDS:
        if kind.code == code:
            return kind(status)
    return error_for_status(status) if status else KubeError(status)


def _is_tls(exc: BaseException) -> bool:
    return isinstance(exc, urllib3.exceptions.SSLError | ssl.SSLError)


def translate(exc: BaseException) -> KubeError:
    """Our error for an exception raised by the kubernetes client or urllib3 under it."""
    if isinstance(exc, KubeError):
        return exc
    if isinstance(exc, ApiException):
        tunnel_code = (exc.headers or {}).get(TUNNEL_ERROR_HEADER)
        # Drop what the cluster sent: the exception's text would otherwise carry it into logs.
        exc.body = None
        exc.data = None
        exc.headers = None
        if tunnel_code and exc.status:
            return _BY_TUNNEL_CODE.get(tunnel_code, KubeTunnelRefusedError)(int(exc.status))
        if exc.status:
            return error_for_status(int(exc.status))
        # Status 0: the client wraps TLS failures this way ("SSLError\n...").
        if str(exc.reason or "").startswith("SSLError"):
            return KubeTLSError()
        return KubeUnreachableError()
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        return translate(exc.reason)
    if _is_tls(exc):
        return KubeTLSError()
    # NewConnectionError subclasses ConnectTimeoutError, so it is checked first.
    if isinstance(exc, urllib3.exceptions.NewConnectionError | ConnectionError):
        return KubeUnreachableError()
    if isinstance(exc, urllib3.exceptions.TimeoutError | TimeoutError):
        return KubeTimeoutError()
    return KubeUnreachableError()


_KINDS: tuple[type[KubeError], ...] = (
    KubeUnreachableError,
    KubeTLSError,
    KubeTimeoutError,
    KubeUnauthorizedError,
    KubeForbiddenError,
    KubeNotFoundError,
    KubeConflictError,
    KubeInvalidError,
    KubeRateLimitedError,
    KubeServerError,
    KubeUnexpectedResponseError,
)
