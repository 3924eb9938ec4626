"""Worker process for bench/eks_poll.py: clusterport's actors plus the sleeping baseline actor.

`sleep_poll` is the pattern clusterport avoids: it polls DescribeStacks and sleeps in the worker
thread between polls, holding the thread for the whole wait. It exists only for the benchmark.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime

import dramatiq
from dramatiq.middleware import Middleware
from prometheus_client import Gauge
from sqlalchemy import select

import workers
from app.aws import cloudformation
from app.cli import main
from app.core.db import session_scope
from app.providers.aws.models import EksProvider
from app.providers.aws.provisioning import credentials
from app.providers.aws.settings import get_eks_settings

BUSY = Gauge("bench_worker_busy_threads", "Worker threads processing a message right now")


class BusyThreads(Middleware):
    """Counts threads inside an actor, so the benchmark can sample occupancy while jobs run."""

    def before_process_message(self, broker: dramatiq.Broker, message: object) -> None:
        BUSY.inc()

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: object,
        *,
        result: object = None,
        exception: object = None,
    ) -> None:
        BUSY.dec()


workers.broker.add_middleware(BusyThreads())


@dramatiq.actor(queue_name="eks", max_retries=0, time_limit=24 * 3600 * 1000)
def sleep_poll(provider_id: int, deadline: float) -> None:
    """Poll one stack until `deadline` (epoch seconds), sleeping in this thread between polls."""
    settings = get_eks_settings()
    while time.time() < deadline:
        with session_scope() as session:
            provider = session.execute(
                select(EksProvider).where(EksProvider.id == provider_id)
            ).scalar_one()
            assert provider.stack_name is not None
            cloudformation.describe_stack(
                region=provider.region,
                credentials=credentials(provider, settings, datetime.now(UTC)),
                name=provider.stack_name,
            )
            provider.polls += 1
        time.sleep(settings.poll_interval_seconds)


if __name__ == "__main__":
    sys.exit(main(["worker"]))
