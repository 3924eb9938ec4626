"""What every `clusterport` command that talks to the REST API shares: where it is, the token,
and one-line errors that say what to do."""

from __future__ import annotations

import os

import httpx

DEFAULT_API_PORT = 8080


class CLIError(Exception):
    """A problem the user can fix: printed as one line that says what to do, exit status 2."""


def api_base_url() -> str:
    """`CLUSTERPORT_API_URL` (with or without its `/api/v1` suffix), else the local API on
    `CLUSTERPORT_API_PORT`."""
    url = os.environ.get("CLUSTERPORT_API_URL", "").strip().rstrip("/")
    if not url:
        port = os.environ.get("CLUSTERPORT_API_PORT", "").strip() or str(DEFAULT_API_PORT)
        if not port.isdigit():
            raise CLIError(f"CLUSTERPORT_API_PORT must be a port number, not {port!r}.")
        return f"http://127.0.0.1:{port}"
    if not url.startswith(("http://", "https://")):
        raise CLIError(f"CLUSTERPORT_API_URL must start with http:// or https:// (it is {url!r}).")
    return url.removesuffix("/api/v1")


def api_token(variable: str = "CLUSTERPORT_TOKEN") -> str:
    token = os.environ.get(variable, "").strip()
    if not token:
        raise CLIError(f"set {variable} to a clusterport API token (cpt_...).")
    return token


def api_client(token: str, base_url: str | None = None) -> httpx.Client:
    return httpx.Client(
        base_url=base_url or api_base_url(),
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
        trust_env=False,
    )


def api_error(response: httpx.Response, doing: str) -> CLIError:
    """Our `{"error": {"code", "message"}}` body as one line, with a hint for the usual ones."""
    try:
        error = response.json().get("error") or {}
    except ValueError:
        error = {}
    code = error.get("code") or f"HTTP {response.status_code}"
    message = error.get("message") or response.reason_phrase
    hint = {
        401: " Check CLUSTERPORT_TOKEN.",
        403: " The token's role is too low for this.",
        404: " Check the ids (and that the token belongs to that project).",
    }.get(response.status_code, "")
    return CLIError(f"{doing} failed: {code}: {message}.{hint}".replace("..", "."))


def unreachable(exc: httpx.HTTPError, base_url: str) -> CLIError:
    return CLIError(
        f"cannot reach the clusterport API at {base_url} ({type(exc).__name__}): is it running? "
        "Set CLUSTERPORT_API_URL (or CLUSTERPORT_API_PORT) to where it listens."
    )
