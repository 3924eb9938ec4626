"""Benchmark: what the poll fallback costs one worker with 1,000 sources to watch.

Every GitOps source polls its ref with `git ls-remote` (default every 180 s) so that a lost
webhook only delays a deployment. This runs 1,000 sources (the worst case: one per environment;
environments sharing a source share its poll) at a short interval on one real worker process
(`clusterport worker`, its default threads) against a real git server on loopback, and measures,
over whole poll rounds once every source has been polled once:
- the worker's CPU (the process and the git commands it ran), per poll and as a share of a core;
- git calls per second (requests the git server answered; `ls-remote` over smart HTTP is two);
and, in the same run, the baseline: the CPU of a shell running the same `git ls-remote`
back to back. From the two it projects the worker's CPU at the default interval.

Run: `eval "$(scripts/services)"; uv run python bench/gitops_polling.py [--sources 1000]
[--interval 10] [--rounds 3]`.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TICKS = os.sysconf("SC_CLK_TCK")
DEFAULT_INTERVAL = 180


def cpu_seconds(pid: int) -> float:
    """User + system time of the process and of its waited-for children (the git commands)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return (utime + stime + cutime + cstime) / TICKS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def baseline(url: str, calls: int) -> float:
    """CPU seconds per `git ls-remote` run back to back by a shell (rusage of the shell and
    every git it ran)."""
    script = f'for i in $(seq {calls}); do git ls-remote "$0" refs/heads/main >/dev/null; done'
    proc = subprocess.Popen(
        ["sh", "-c", script, url], env={**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit("git ls-remote failed")
    return (usage.ru_utime + usage.ru_stime) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=1000)
    parser.add_argument("--interval", type=int, default=10, help="poll interval (s), min 10")
    parser.add_argument("--rounds", type=int, default=3, help="poll rounds measured")
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args()

    from cryptography.fernet import Fernet

    from tests.support.services import start_test_services

    services = start_test_services()
    work = Path(tempfile.mkdtemp(prefix="bench-polling-"))
    os.environ.update(
        CLUSTERPORT_DATABASE_URL=services.database_url,
        CLUSTERPORT_BROKER_URL=services.broker_url,
        CLUSTERPORT_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        CLUSTERPORT_ALLOW_LOCAL_NETWORK="true",
        CLUSTERPORT_LOG_LEVEL="WARNING",
        CLUSTERPORT_GITOPS_CACHE_DIR=str(work / "cache"),
        CLUSTERPORT_HEALTH_PORT=str(free_port()),
    )
    worker: subprocess.Popen[bytes] | None = None
    try:
        from app.cli import migrate_database
        from tests.support.git_server import git_server

        migrate_database()
        (work / "served").mkdir()
        with git_server(work / "served") as server:
            copy = server.create("app", work)
            copy.write("k8s/config.yaml", "apiVersion: v1\nkind: ConfigMap\n")
            head = copy.commit_and_push("first")
            url = server.url_of("app")
            ids = _sources(args.sources, url, head, args.interval)
            worker = subprocess.Popen(
                [str(Path(sys.executable).parent / "clusterport"), "worker"],
                stdout=subprocess.DEVNULL,
                stderr=(work / "worker.log").open("wb"),
            )
            _send_polls(ids)
            started = time.monotonic()
            _wait_all_polled(ids, started + 10 * args.interval + 120)
            first_round = time.monotonic() - started
            cpu0, requests0, t0 = cpu_seconds(worker.pid), server.requests, time.monotonic()
            time.sleep(args.rounds * args.interval)  # the measured window: whole poll rounds
            cpu1, requests1, t1 = cpu_seconds(worker.pid), server.requests, time.monotonic()
            window = t1 - t0
            worker.terminate()  # the baseline's git requests are counted alone
            worker.wait(30)
            before = server.requests
            bare = baseline(url, 100)
            per_call = (server.requests - before) / 100  # git requests one ls-remote makes
            polls = (requests1 - requests0) / per_call
            per_poll = (cpu1 - cpu0) / polls
        at_default = args.sources / DEFAULT_INTERVAL
        result: dict[str, Any] = {
            "sources": args.sources,
            "interval_s": args.interval,
            "first_round_s": round(first_round, 1),
            "window_s": round(window, 1),
            "git_requests_per_s": round((requests1 - requests0) / window, 1),
            "polls_per_s": round(polls / window, 1),
            "expected_polls_per_s": round(args.sources / args.interval, 1),
            "worker_cpu_share_of_a_core": round((cpu1 - cpu0) / window, 3),
            "worker_cpu_ms_per_poll": round(per_poll * 1000, 2),
            "baseline_git_ls_remote_cpu_ms": round(bare * 1000, 2),
            "ratio_worker_to_baseline": round(per_poll / bare, 2),
            "projected_at_180s": {
                "polls_per_s": round(at_default, 2),
                "worker_cpu_share_of_a_core": round(at_default * per_poll, 4),
            },
        }
        print(json.dumps(result, indent=2))
        if args.output:
            args.output.write_text(json.dumps(result, indent=2))
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(30)
        from app.core.db import get_engine

        get_engine().dispose()
        services.close()


def _sources(count: int, url: str, head: str, interval: int) -> list[int]:
    """A project and `count` sources already at `head` (so polls find nothing new to deploy)."""
    from app.core.db import session_scope
    from app.gitops.models import GitSource
    from app.projects.models import Project

    with session_scope() as session:
        project = Project(name="bench-polling")
        session.add(project)
        session.flush()
        rows = [
            GitSource(
                project_id=project.id,
                name=f"s{i}",
                url=url,
                ref="refs/heads/main",
                paths=["k8s"],
                hook_id=secrets.token_hex(16),
                webhook_secret=secrets.token_hex(16),
                poll_interval_seconds=interval,
                last_polled_commit=head,
            )
            for i in range(count)
        ]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def _send_polls(ids: list[int]) -> None:
    """Start each source's poll chain, as creating a source through the API does."""
    import workers.gitops

    for source_id in ids:
        workers.gitops.poll_source.send(source_id)


def _wait_all_polled(ids: list[int], deadline: float) -> None:
    from sqlalchemy import func, select

    from app.core.db import session_scope
    from app.gitops.models import GitSource

    while True:
        with session_scope() as session:
            waiting = session.scalar(
                select(func.count())
                .select_from(GitSource)
                .where(GitSource.id.in_(ids), GitSource.last_polled_at.is_(None))
            )
        if waiting == 0:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"{waiting} sources were never polled")
        time.sleep(0.5)


if __name__ == "__main__":
    main()
