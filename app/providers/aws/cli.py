"""`clusterport clusters wait ID`: follow a cluster's provisioning with a progress bar."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any, TextIO

import httpx

from app.core.cli import api_base_url, api_token, unreachable
from app.providers.aws.models import TERMINAL_STEPS, Step

_ORDER = [Step.assume_role, Step.create_stack, Step.poll_stack, Step.configure, Step.done]
BAR_WIDTH = 30
EXIT_CONNECTED, EXIT_ERRORED, EXIT_UNAVAILABLE = 0, 1, 2


def progress_line(view: dict[str, Any]) -> str:
    """One line: bar, step, status and elapsed time (a failed run shows where it stopped)."""
    step = Step(view["step"])
    done = len(_ORDER) - 1 if step is Step.failed else _ORDER.index(step)
    filled = BAR_WIDTH * done // (len(_ORDER) - 1)
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    minutes, seconds = divmod(int(view["elapsed_seconds"]), 60)
    line = f"[{bar}] {step.value:<12} {view['status']:<12} {minutes:02d}:{seconds:02d}"
    if view.get("stack_status") and step is Step.poll_stack:
        line += f"  stack {view['stack_status']}"
    return line


async def wait_for_cluster(
    client: httpx.AsyncClient,
    cluster_id: int,
    *,
    out: TextIO,
    interval: float = 2.0,
    give_up_after: float | None = None,
) -> int:
    """Poll the provisioning endpoint until a terminal step; return the exit code."""
    interactive = out.isatty()
    loop = asyncio.get_running_loop()
    deadline = None if give_up_after is None else loop.time() + give_up_after
    last_key: tuple[str, str] | None = None
    while True:
        response = await client.get(f"/api/v1/clusters/{cluster_id}/provisioning")
        if response.status_code != 200:
            try:
                error = response.json().get("error") or {}
            except ValueError:  # not clusterport's API (wrong URL or port)
                error = {"message": "the answer is not clusterport's; check CLUSTERPORT_API_URL"}
            code = error.get("code", response.status_code)
            out.write(f"\nerror: {code}: {error.get('message', '')}\n")
            return EXIT_UNAVAILABLE
        view = response.json()
        line = progress_line(view)
        key = (view["step"], view["status"])
        if interactive:
            out.write("\r" + line)
        elif key != last_key:
            out.write(line + "\n")  # not a terminal: one line per step, no redrawing
        last_key = key
        out.flush()
        if Step(view["step"]) in TERMINAL_STEPS:
            if interactive:
                out.write("\n")
            if view["error"]:
                out.write(f"error: {view['error']['code']}: {view['error']['message']}\n")
                return EXIT_ERRORED
            out.write(f"cluster {cluster_id} is {view['status']}\n")
            return EXIT_CONNECTED
        if deadline is not None and loop.time() >= deadline:
            out.write("\ntimed out waiting; provisioning goes on\n")
            return EXIT_UNAVAILABLE
        await asyncio.sleep(interval)


def cmd_clusters_wait(args: argparse.Namespace) -> int:
    """Entry point: CLUSTERPORT_API_URL (default the local API) and CLUSTERPORT_TOKEN."""
    token = api_token()
    base_url = api_base_url()

    async def run() -> int:
        async with httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
            trust_env=False,
        ) as client:
            return await wait_for_cluster(
                client,
                args.cluster_id,
                out=sys.stdout,
                interval=args.interval,
                give_up_after=args.timeout,
            )

    try:
        return asyncio.run(run())
    except httpx.HTTPError as exc:
        raise unreachable(exc, base_url) from None


def add_wait_parser(clusters: Any) -> None:
    """Add `wait` to the `clusters` subcommand parsers (argparse's _SubParsersAction)."""
    wait = clusters.add_parser("wait", help="Show provisioning progress until it ends.")
    wait.add_argument("cluster_id", type=int)
    wait.add_argument("--interval", type=float, default=2.0, help="seconds between checks")
    wait.add_argument("--timeout", type=float, default=None, help="give up after N seconds")
    wait.set_defaults(func=cmd_clusters_wait)
