"""`clusterport deployments watch ID --project P`: follow a deployment's progress (the SSE
stream of the API) object by object in a terminal, like `clusterport clusters wait`."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any, TextIO

import httpx

EXIT_SUCCEEDED, EXIT_FAILED, EXIT_UNAVAILABLE, EXIT_AWAITING = 0, 1, 2, 3
_MARK = {"healthy": "ok", "progressing": "..", "failed": "!!", None: "  "}


def render_view(view: dict[str, Any]) -> list[str]:
    """The deployment's header line and one line per object."""
    commit = (view.get("commit_sha") or "")[:12] or "(ref head)"
    lines = [f"deployment {view['id']}  {view['status']:<22} {view['trigger']:<9} {commit}"]
    for obj in view.get("objects") or []:
        where = f"{obj['namespace']}/" if obj["namespace"] else ""
        state = obj["health"] or obj["result"]
        mark = "!!" if obj["result"] == "failed" else _MARK.get(obj["health"], "  ")
        detail = f"  {obj['code']}" if obj.get("code") else ""
        lines.append(
            f"  [{mark}] {obj['action']:<13} {obj['kind']}/{where}{obj['name']}  {state}{detail}"
        )
    if view.get("error"):
        error = view["error"]
        about = f" ({error['object']})" if error.get("object") else ""
        lines.append(f"error: {error['code']}: {error['message']}{about}")
    for reason in view.get("prune_guard_reasons") or []:
        lines.append(f"waiting for confirmation: {reason}")
    return lines


def _exit_code(status: str) -> int:
    if status == "succeeded":
        return EXIT_SUCCEEDED
    if status == "awaiting_confirmation":
        return EXIT_AWAITING
    return EXIT_FAILED


async def watch_deployment(
    client: httpx.AsyncClient, project_id: int, deployment_id: int, *, out: TextIO
) -> int:
    """Draw each `deployment` event until `end`; return the exit code."""
    interactive = out.isatty()
    drawn = 0
    status = None
    path = f"/api/v1/projects/{project_id}/gitops/deployments/{deployment_id}/events"
    async with client.stream("GET", path) as response:
        if response.status_code != 200:
            body = json.loads(await response.aread() or b"{}")
            error = body.get("error", {})
            out.write(
                f"error: {error.get('code', response.status_code)}: {error.get('message', '')}\n"
            )
            return EXIT_UNAVAILABLE
        event = None
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "deployment":
                view = json.loads(line[6:])
                status = view["status"]
                lines = render_view(view)
                if interactive and drawn:
                    out.write(f"\x1b[{drawn}F\x1b[J")  # back to the first line, clear below
                out.write("\n".join(lines) + "\n")
                drawn = len(lines)
                out.flush()
            elif line.startswith("data: ") and event == "end":
                break
    if status is None:
        return EXIT_UNAVAILABLE
    return _exit_code(status)


def cmd_deployments_watch(args: argparse.Namespace) -> int:
    """Entry point: CLUSTERPORT_API_URL (default the local API) and CLUSTERPORT_TOKEN."""
    token = os.environ.get("CLUSTERPORT_TOKEN")
    if not token:
        print("clusterport: set CLUSTERPORT_TOKEN to an API token", file=sys.stderr)
        return EXIT_UNAVAILABLE
    base_url = os.environ.get("CLUSTERPORT_API_URL", "http://127.0.0.1:8080")

    async def run() -> int:
        timeout = httpx.Timeout(30, read=None)  # the stream is quiet between changes
        async with httpx.AsyncClient(
            base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        ) as client:
            try:
                return await watch_deployment(
                    client, args.project, args.deployment_id, out=sys.stdout
                )
            except httpx.HTTPError:
                print("clusterport: the API could not be reached", file=sys.stderr)
                return EXIT_UNAVAILABLE

    return asyncio.run(run())


def add_deployments_parser(sub: Any) -> None:
    deployments = sub.add_parser("deployments", help="GitOps deployments.").add_subparsers(
        dest="deployments_command", required=True
    )
    watch = deployments.add_parser(
        "watch",
        help="Show a deployment's progress, object by object, until it ends. Exit code: "
        "0 succeeded, 1 failed or timed out, 2 API unavailable, 3 waiting for a prune "
        "confirmation.",
    )
    watch.add_argument("deployment_id", type=int)
    watch.add_argument("--project", type=int, required=True, help="the deployment's project id")
    watch.set_defaults(func=cmd_deployments_watch)
