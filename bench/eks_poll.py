"""Benchmark: 1,000 EKS provisions polling CloudFormation at once.

clusterport polls by delayed re-enqueue: a waiting provision is a delayed message in RabbitMQ,
not a busy worker thread. The baseline in the same run is the pattern it avoids, a worker that
sleeps between polls (bench/eks_worker.py `sleep_poll`). Both run against the same Postgres,
RabbitMQ vhost, moto server (in this process, on loopback) and worker settings, for the same
window, and the script reports for each: messages/s, DescribeStacks polls/s, how many of the
provisions were polled at all, worker thread occupancy (busy thread-seconds from the worker's
/metrics, divided by threads x wall time) and RabbitMQ queue depth sampled every second.

Run: `eval "$(scripts/services)" && uv run python bench/eks_poll.py [--provisions 1000]`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TEMPLATE = """
AWSTemplateFormatVersion: "2010-09-09"
Resources:
  NodeInstanceRole:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Version: "2012-10-17"
        Statement:
          - Effect: Allow
            Principal: {Service: ec2.amazonaws.com}
            Action: sts:AssumeRole
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@dataclass
class Sample:
    t: float
    busy_threads: float
    jobs: float
    ready: dict[str, int]


@dataclass
class Result:
    mode: str
    window: float
    threads: int
    samples: list[Sample] = field(default_factory=list)
    polls: int = 0
    polled_provisions: int = 0
    # Messages delivered to the worker and not yet acknowledged (delayed ones wait there).
    unacked: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        first, last = self.samples[0], self.samples[-1]
        wall = last.t - first.t
        occupancy = [s.busy_threads / self.threads for s in self.samples]
        ready = [sum(s.ready.values()) for s in self.samples]
        delayed = [s.ready.get("eks.DQ", 0) for s in self.samples]
        return {
            "mode": self.mode,
            "messages_per_s": round((last.jobs - first.jobs) / wall, 1),
            "polls_per_s": round(self.polls / wall, 1),
            "provisions_polled": self.polled_provisions,
            "thread_occupancy_mean": round(statistics.fmean(occupancy), 3),
            "thread_occupancy_median": round(statistics.median(occupancy), 3),
            "thread_occupancy_max": round(max(occupancy), 3),
            "queue_ready_median": statistics.median(ready),
            "queue_ready_max": max(ready),
            "delay_queue_ready_median": statistics.median(delayed),
            "unacked_median": statistics.median(self.unacked) if self.unacked else None,
            "unacked_max": max(self.unacked) if self.unacked else None,
            # Every tenth sample: seconds into the run, busy threads, ready messages.
            "series": [
                [round(s.t - first.t), s.busy_threads, sum(s.ready.values())]
                for s in self.samples[::10]
            ],
        }


def metrics(port: int) -> tuple[float, float]:
    """(threads busy now, jobs finished so far) from the worker's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    busy = re.search(r"^bench_worker_busy_threads (\S+)$", text, re.M)
    jobs = re.findall(r"^clusterport_jobs_total\{[^}]*\} (\S+)$", text, re.M)
    return (float(busy.group(1)) if busy else 0.0), sum(float(v) for v in jobs)


def queue_depths(broker_url: str) -> dict[str, int]:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        channel = connection.channel()
        depths = {}
        for name in ("eks", "eks.DQ"):
            frame = channel.queue_declare(queue=name, passive=True, durable=True)
            depths[name] = int(frame.method.message_count)
        return depths
    finally:
        connection.close()


def unacked(vhost: str) -> int:
    """Unacknowledged messages over the vhost's queues (rabbitmqctl: slow, sampled rarely)."""
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "messages_unacknowledged"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return sum(int(line.split()[1]) for line in out.splitlines()[1:] if len(line.split()) == 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--provisions", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--interval", type=float, default=20.0, help="seconds between polls")
    parser.add_argument("--window", type=float, default=60.0, help="seconds measured per mode")
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args()

    from cryptography.fernet import Fernet

    from tests.support.services import start_test_services

    services = start_test_services()
    os.environ.update(
        {
            "CLUSTERPORT_DATABASE_URL": services.database_url,
            "CLUSTERPORT_BROKER_URL": services.broker_url,
            "CLUSTERPORT_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "CLUSTERPORT_LOG_LEVEL": "WARNING",
            "CLUSTERPORT_EKS_POLL_INTERVAL_SECONDS": str(args.interval),
            "CLUSTERPORT_EKS_STALL_AFTER_SECONDS": "86400",  # no reconciler duplicates
            "CLUSTERPORT_EKS_TIMEOUT_SECONDS": "86400",
            "AWS_ACCESS_KEY_ID": "AKIABENCH",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    import logging

    from moto.cloudformation.models import cloudformation_backends
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per moto request
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    os.environ["CLUSTERPORT_AWS_ENDPOINT_URL"] = f"http://{host}:{port}"
    try:
        return run(args, services.broker_url, cloudformation_backends)
    finally:
        moto.stop()
        from app.core.db import get_engine

        get_engine().dispose()
        services.close()


def run(args: argparse.Namespace, broker_url: str, cfn_backends: Any) -> int:
    from datetime import UTC, datetime

    from sqlalchemy import func, select, update

    from app.aws import cloudformation, sts
    from app.cli import migrate_database
    from app.clusters.models import Cluster, ClusterStatus, ProviderType
    from app.core.db import session_scope
    from app.projects.models import Project
    from app.providers.aws.models import EksProvider, Step

    migrate_database()
    started = time.monotonic()
    region = "eu-west-1"
    creds = sts.assume_role(
        role_arn="arn:aws:iam::111122223333:role/bench",
        external_id="bench",
        session_name="bench",
        region=region,
        duration_seconds=43200,
    )
    now = datetime.now(UTC)
    with session_scope() as session:
        project = Project(name="bench")
        session.add(project)
        session.flush()
        for i in range(args.provisions):
            name = f"clusterport-cluster-bench-{i}"
            cloudformation.create_stack(
                region=region, credentials=creds, name=name, template_body=TEMPLATE, parameters={}
            )
            cluster = Cluster(
                project_id=project.id,
                name=f"bench-{i}",
                environment_scope=f"bench-{i}",
                provider_type=ProviderType.aws,
                status=ClusterStatus.provisioning,
            )
            session.add(cluster)
            session.flush()
            session.add(
                EksProvider(
                    cluster_id=cluster.id,
                    role_arn="arn:aws:iam::111122223333:role/bench",
                    external_id="bench",
                    region=region,
                    kubernetes_version="1.33",
                    node_count=1,
                    instance_type="t3.medium",
                    key_name="bench",
                    vpc_id="vpc-01234567",
                    subnet_ids=["subnet-01234567", "subnet-89abcdef"],
                    security_group_id="sg-01234567",
                    service_role_arn="arn:aws:iam::111122223333:role/eks",
                    eks_cluster_name=f"bench-{i}",
                    step=Step.poll_stack,
                    run_seq=0,
                    started_at=now,
                    step_started_at=now,
                    stack_created_at=now,
                    next_run_at=now,
                    stack_name=name,
                    access_key_id=creds.access_key_id,
                    secret_access_key=creds.secret_access_key,
                    session_token=creds.session_token,
                    credentials_expire_at=creds.expiration,
                )
            )
    # Every stack stays in progress for the whole run (moto would complete them at once).
    for account in cfn_backends.values():
        for backend in account.values():
            for stack in backend.stacks.values():
                stack.status = "CREATE_IN_PROGRESS"
    print(
        f"setup: {args.provisions} stacks and records in {time.monotonic() - started:.1f}s",
        file=sys.stderr,
    )

    import workers
    from workers.eks import eks_provision

    def provider_ids() -> list[int]:
        with session_scope() as session:
            return list(session.execute(select(EksProvider.id).order_by(EksProvider.id)).scalars())

    def reset() -> None:
        with session_scope() as session:
            session.execute(update(EksProvider).values(polls=0, run_seq=0, step=Step.poll_stack))
        workers.broker.flush_all()

    def measure(mode: str, enqueue: Any) -> Result:
        reset()
        health = free_port()
        env = {
            **os.environ,
            "CLUSTERPORT_WORKER_THREADS": str(args.threads),
            "CLUSTERPORT_HEALTH_PORT": str(health),
            "CLUSTERPORT_BIND_HOST": "127.0.0.1",
        }
        worker = subprocess.Popen(
            [sys.executable, str(REPO / "bench" / "eks_worker.py")],
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    metrics(health)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            enqueue()
            result = Result(mode=mode, window=args.window, threads=args.threads)
            end = time.monotonic() + args.window
            vhost = urllib.parse.unquote(urllib.parse.urlsplit(broker_url).path.lstrip("/"))
            while time.monotonic() < end:
                busy, jobs = metrics(health)
                result.samples.append(
                    Sample(time.monotonic(), busy, jobs, queue_depths(broker_url))
                )
                if len(result.samples) % 10 == 5:
                    result.unacked.append(unacked(vhost))
                time.sleep(1.0)
            busy, jobs = metrics(health)
            result.samples.append(Sample(time.monotonic(), busy, jobs, queue_depths(broker_url)))
            with session_scope() as session:
                result.polls = int(
                    session.execute(select(func.sum(EksProvider.polls))).scalar_one() or 0
                )
                result.polled_provisions = int(
                    session.execute(
                        select(func.count()).select_from(EksProvider).where(EksProvider.polls > 0)
                    ).scalar_one()
                )
            return result
        finally:
            os.killpg(worker.pid, 9)
            worker.wait(timeout=30)

    ids = provider_ids()

    def enqueue_delayed() -> None:
        for provider_id in ids:
            eks_provision.send(provider_id, 0)

    def enqueue_sleeping() -> None:
        from dramatiq import Message

        until = time.time() + args.window + 5
        for provider_id in ids:
            workers.broker.enqueue(
                Message(
                    queue_name="eks",
                    actor_name="sleep_poll",
                    args=(provider_id, until),
                    kwargs={},
                    options={},
                )
            )

    results = [measure("delayed re-enqueue (clusterport)", enqueue_delayed)]
    results.append(measure("sleep in worker (baseline)", enqueue_sleeping))
    workers.broker.flush_all()
    summaries = [r.summary() for r in results]
    ours, base = summaries
    report = {
        "provisions": args.provisions,
        "threads": args.threads,
        "poll_interval_s": args.interval,
        "window_s": args.window,
        "results": summaries,
        "ratios_ours_over_baseline": {
            key: (round(ours[key] / base[key], 2) if base[key] else None)
            for key in (
                "messages_per_s",
                "polls_per_s",
                "provisions_polled",
                "thread_occupancy_mean",
            )
        },
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
