"""`clusterport agent-server`, `clusterport agent` and `clusterport kubeconfig --agent ID`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import uvloop
import yaml

DEFAULT_PROXY_URL = "http://127.0.0.1:8154"


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
        "kubeconfig", help="Write a kubeconfig context that reaches a cluster through its agent."
    )
    kubeconfig.add_argument("--agent", type=int, required=True, help="agent id")
    kubeconfig.add_argument(
        "--server",
        default=os.environ.get("CLUSTERPORT_AGENT_PROXY_URL", DEFAULT_PROXY_URL),
        help="agent server proxy URL (default: $CLUSTERPORT_AGENT_PROXY_URL or %(default)s)",
    )
    kubeconfig.add_argument(
        "--token-env",
        default="CLUSTERPORT_TOKEN",
        help="environment variable holding the clusterport API token (default: %(default)s)",
    )
    kubeconfig.add_argument(
        "--kubeconfig", help="file to update (default: $KUBECONFIG or ~/.kube/config)"
    )
    kubeconfig.add_argument("--context", help="context name (default: clusterport-agent-ID)")
    kubeconfig.add_argument("--ca-file", help="CA bundle to verify an https:// proxy URL")
    kubeconfig.set_defaults(func=cmd_kubeconfig)


def serve_hook(_settings: object) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
    """The agent server as a task of `clusterport serve` (the API owns the health port)."""

    async def run(stop: asyncio.Event) -> None:
        server = _build_server()
        await server.run(stop, with_health=False)

    return run


def _build_server() -> Any:
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
        await _build_server().run(stop)

    uvloop.run(main())
    return 0


def cmd_agent(args: argparse.Namespace) -> int:
    from app.agent.main import main

    main()
    return 0


def cmd_kubeconfig(args: argparse.Namespace) -> int:
    token = os.environ.get(args.token_env, "").strip()
    if not token:
        print(f"clusterport: set {args.token_env} to a clusterport API token", file=sys.stderr)
        return 2
    default = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or "~/.kube/config"
    path = Path(args.kubeconfig or default).expanduser()
    name = args.context or f"clusterport-agent-{args.agent}"
    config: dict[str, Any] = {}
    if path.exists():
        config = yaml.safe_load(path.read_text()) or {}
    config.setdefault("apiVersion", "v1")
    config.setdefault("kind", "Config")
    cluster: dict[str, Any] = {"server": f"{args.server.rstrip('/')}/k8s-proxy/agents/{args.agent}"}
    if args.ca_file:
        cluster["certificate-authority"] = str(Path(args.ca_file).resolve())
    _upsert(config, "clusters", name, "cluster", cluster)
    _upsert(config, "users", name, "user", {"token": token})
    _upsert(config, "contexts", name, "context", {"cluster": name, "user": name})
    config["current-context"] = name
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        path.touch(mode=0o600)  # it holds a token
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    print(f"wrote context {name} to {path}", file=sys.stderr)
    return 0


def _upsert(
    config: dict[str, Any], section: str, name: str, key: str, value: dict[str, Any]
) -> None:
    entries = [e for e in config.get(section) or [] if e.get("name") != name]
    entries.append({"name": name, key: value})
    config[section] = entries
