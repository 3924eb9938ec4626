"""`clusterport agent-server`, `clusterport agent` and `clusterport kubeconfig --agent ID`."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import uvloop
import yaml


def default_proxy_url() -> str:
    """$CLUSTERPORT_AGENT_PROXY_URL, else the local proxy on $CLUSTERPORT_AGENT_PROXY_PORT."""
    port = os.environ.get("CLUSTERPORT_AGENT_PROXY_PORT", "").strip() or "8154"
    return os.environ.get("CLUSTERPORT_AGENT_PROXY_URL") or f"https://127.0.0.1:{port}"


def register_commands(sub: Any) -> None:
    """Add the agent subcommands to the `clusterport` argument parser."""
    server = sub.add_parser(
        "agent-server",
        help="Run the agent server (agent websocket, Kubernetes API proxy, health port).",
    )
    server.set_defaults(func=cmd_agent_server)
    agent = sub.add_parser("agent", help="Run the in-cluster agent (CLUSTERPORT_AGENT_* settings).")
    agent.set_defaults(func=cmd_agent)
    kubeconfig = sub.add_parser(
        "kubeconfig",
        help="Write a kubeconfig context that reaches a cluster through its agent.",
        description=(
            "Add (or update) a context clusterport-agent-ID to your kubeconfig that sends "
            "kubectl through the agent server's Kubernetes API proxy with your clusterport API "
            "token. It checks first that the proxy answers and the agent exists, and makes "
            "the new context the current one unless --no-switch."
        ),
    )
    kubeconfig.add_argument("--agent", type=int, required=True, help="agent id")
    kubeconfig.add_argument(
        "--server",
        default=default_proxy_url(),
        help="agent server proxy URL (default: $CLUSTERPORT_AGENT_PROXY_URL, else "
        "https://127.0.0.1:$CLUSTERPORT_AGENT_PROXY_PORT, 8154 when unset)",
    )
    kubeconfig.add_argument(
        "--ca-file",
        help="CA bundle that signed the proxy's TLS certificate (default: the system's CAs)",
    )
    kubeconfig.add_argument(
        "--token-env",
        default="CLUSTERPORT_TOKEN",
        help="environment variable holding the clusterport API token (default: %(default)s)",
    )
    kubeconfig.add_argument(
        "--kubeconfig", help="file to update (default: first file of $KUBECONFIG, ~/.kube/config)"
    )
    kubeconfig.add_argument("--context", help="context name (default: clusterport-agent-ID)")
    kubeconfig.add_argument(
        "--no-switch", action="store_true", help="keep the current context as it is"
    )
    kubeconfig.add_argument(
        "--no-check",
        action="store_true",
        help="write the context without asking the proxy whether the agent exists",
    )
    kubeconfig.set_defaults(func=cmd_kubeconfig)


def build_server() -> Any:
    from app.agent_server.config import AgentServerSettings
    from app.agent_server.server import AgentServer
    from app.agent_server.store import AgentStore
    from app.core.db import get_async_engine

    return AgentServer(AgentServerSettings(), AgentStore(get_async_engine()))


def cmd_agent_server(args: argparse.Namespace) -> int:
    from app.cli import _prepare

    _prepare(embedded=False)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await build_server().run(stop)

    uvloop.run(main())
    return 0


def cmd_agent(args: argparse.Namespace) -> int:
    from app.agent.main import main

    main()
    return 0


def cmd_kubeconfig(args: argparse.Namespace) -> int:
    from app.core.cli import CLIError, api_token

    token = api_token(args.token_env)
    server = args.server.rstrip("/")
    if not server.startswith(("https://", "http://")):
        raise CLIError(f"--server must be an https:// URL, not {server!r}.")
    ca_file = Path(args.ca_file).expanduser().resolve() if args.ca_file else None
    if ca_file is not None and not ca_file.is_file():
        raise CLIError(f"--ca-file {args.ca_file}: no such file.")
    if server.startswith("http://"):
        print(
            "clusterport: warning: --server is plain http; kubectl sends your token in clear "
            "text. Give the agent server a TLS certificate and use https://.",
            file=sys.stderr,
        )
    if not args.no_check:
        _check_agent(server, args.agent, token, ca_file)
    default = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or "~/.kube/config"
    path = Path(args.kubeconfig or default).expanduser()
    name = args.context or f"clusterport-agent-{args.agent}"
    config: dict[str, Any] = {}
    if path.exists():
        try:
            config = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError:
            raise CLIError(f"{path} is not valid YAML; pass --kubeconfig.") from None
        if not isinstance(config, dict):
            raise CLIError(f"{path} is not a kubeconfig; pass --kubeconfig.")
    config.setdefault("apiVersion", "v1")
    config.setdefault("kind", "Config")
    cluster: dict[str, Any] = {"server": f"{server}/k8s-proxy/agents/{args.agent}"}
    if ca_file is not None:
        cluster["certificate-authority"] = str(ca_file)
    _upsert(config, "clusters", name, "cluster", cluster)
    _upsert(config, "users", name, "user", {"token": token})
    _upsert(config, "contexts", name, "context", {"cluster": name, "user": name})
    switched = not args.no_switch and config.get("current-context") != name
    if not args.no_switch:
        config["current-context"] = name
    path.parent.mkdir(parents=True, exist_ok=True)
    # It holds a token: owner-only, also when the file existed with a wider mode.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(yaml.safe_dump(config, sort_keys=False))
    note = f"; current context is now {name}" if switched else f"; use kubectl --context {name}"
    print(f"wrote context {name} to {path}{note}", file=sys.stderr)
    return 0


def _check_agent(server: str, agent_id: int, token: str, ca_file: Path | None) -> None:
    """Ask the proxy for the agent's /version: it checks the URL, TLS, token and agent at once."""
    import ssl

    import httpx

    from app.core.cli import CLIError

    verify: ssl.SSLContext | bool = ssl.create_default_context(
        cafile=str(ca_file) if ca_file else None
    )
    url = f"{server}/k8s-proxy/agents/{agent_id}/version"
    try:
        response = httpx.get(
            url,
            headers={"Authorization": f"Bearer {token}"},
            verify=verify,
            timeout=15,
            trust_env=False,
        )
    except httpx.ConnectError as exc:
        if isinstance(exc.__cause__, ssl.SSLError) or "CERTIFICATE" in str(exc).upper():
            raise CLIError(
                f"the TLS certificate of {server} is not trusted: pass --ca-file with the CA "
                "that signed it (or the certificate itself when self-signed)."
            ) from None
        raise CLIError(
            f"cannot connect to the agent server proxy at {server}: check --server (host and "
            "port of CLUSTERPORT_AGENT_PROXY_PORT), or pass --no-check to write anyway."
        ) from None
    except httpx.HTTPError as exc:
        raise CLIError(
            f"the agent server proxy at {server} did not answer ({type(exc).__name__}); "
            "pass --no-check to write anyway."
        ) from None
    if response.status_code == 200:
        return
    try:
        body = response.json()
        reason = str(body["details"]["causes"][0]["reason"])
        message = str(body.get("message", ""))
    except (ValueError, KeyError, IndexError, TypeError):
        raise CLIError(
            f"{server} answered HTTP {response.status_code} and is not a clusterport agent "
            "server proxy: check --server."
        ) from None
    if reason == "agent_not_connected":
        print(
            f"clusterport: agent {agent_id} is not connected right now; the context works "
            "once it connects.",
            file=sys.stderr,
        )
        return
    if response.status_code == 404:
        raise CLIError(
            f"agent {agent_id} does not exist, or your token's project does not own it "
            "(list agents with GET /api/v1/projects/ID/agents)."
        )
    raise CLIError(f"the proxy refused: {message} ({reason}).")


def _upsert(
    config: dict[str, Any], section: str, name: str, key: str, value: dict[str, Any]
) -> None:
    entries = [e for e in config.get(section) or [] if e.get("name") != name]
    entries.append({"name": name, key: value})
    config[section] = entries
