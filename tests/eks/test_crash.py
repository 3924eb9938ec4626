"""Crash tests: the `clusterport worker` process is killed (SIGKILL) between provisioning steps.

A fresh worker must still bring provisioning to a terminal state, with the credentials gone:
either RabbitMQ redelivers the unacknowledged delayed poll message, or (when the message is
lost) the reconciler that runs at worker start-up finds the stalled record.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Api
from tests.eks.conftest import eks_body, provider_of, raw_credentials, wait_until


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class WorkerProcess:
    """A real `clusterport worker` in its own process group, killed or stopped by the test."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def sent(self, actor: str) -> int:
        """How many `actor` messages this worker has published (confirmed by RabbitMQ)."""
        text = self.log_path.read_text(errors="replace")
        return sum(
            1 for line in text.splitlines() if "job_enqueued" in line and f"actor={actor}" in line
        )

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks run, unacknowledged messages return to RabbitMQ."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self._log.close()


StartWorker = Callable[..., WorkerProcess]


@pytest.fixture
def start_worker(eks_env: dict[str, str], tmp_path: Path) -> Iterator[StartWorker]:
    started: list[WorkerProcess] = []
    env = {
        **os.environ,
        "CLUSTERPORT_ALLOW_LOCAL_NETWORK": "true",
        "CLUSTERPORT_BIND_HOST": "127.0.0.1",
        "CLUSTERPORT_WORKER_THREADS": "2",
        "CLUSTERPORT_LOG_LEVEL": "DEBUG",  # job_enqueued lines tell when a send is confirmed
        # Long enough that the first poll is still waiting when the worker is killed.
        "CLUSTERPORT_EKS_POLL_INITIAL_DELAY_SECONDS": "3",
    }

    def start(**extra: str) -> WorkerProcess:
        worker = WorkerProcess(
            {**env, **extra, "CLUSTERPORT_HEALTH_PORT": str(_free_port())},
            tmp_path / f"worker-{len(started)}.log",
        )
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


async def _create(admin: Api, name: str) -> int:
    project = await admin.create_project()
    response = await admin.post(f"/api/v1/projects/{project['id']}/clusters/eks", eks_body(name))
    assert response.status_code == 201, response.text
    cluster_id: int = response.json()["cluster_id"]
    return cluster_id


async def _reaches(cluster_id: int, *steps: str) -> None:
    async def check() -> bool:
        return provider_of(cluster_id).step in steps

    await wait_until(check)


async def test_killed_worker_resumes_from_the_redelivered_poll(
    admin: Api, start_worker: StartWorker, eks_name: str
) -> None:
    # The reconciler is kept out of it: only RabbitMQ's redelivery can resume this run.
    no_reconciler = {"CLUSTERPORT_EKS_STALL_AFTER_SECONDS": "3600"}
    cluster_id = await _create(admin, eks_name)
    first = start_worker(**no_reconciler)
    await _reaches(cluster_id, "poll_stack")

    # Kill only once the delayed poll message is published: a kill between the commit and the
    # send loses the message, which is the reconciler's case (the next test).
    async def poll_message_sent() -> bool:
        return first.sent("eks_provision") >= 2  # after assume_role, after create_stack

    await wait_until(poll_message_sent)
    first.kill()
    assert provider_of(cluster_id).step == "poll_stack"
    assert raw_credentials(cluster_id)[0] is not None

    start_worker(**no_reconciler)
    await _reaches(cluster_id, "done", "failed")

    provider = provider_of(cluster_id)
    assert (provider.step, provider.error_code) == ("done", None)
    assert raw_credentials(cluster_id) == (None, None, None, None)
    view = (await admin.get(f"/api/v1/clusters/{cluster_id}/provisioning")).json()
    assert view["status"] == "connected"


async def test_lost_message_is_recovered_by_the_reconciler(
    admin: Api, start_worker: StartWorker, eks_name: str
) -> None:
    import workers

    cluster_id = await _create(admin, eks_name)
    first = start_worker()
    await _reaches(cluster_id, "poll_stack")
    first.kill()
    workers.broker.flush_all()  # the delayed poll message is lost with the worker
    before = provider_of(cluster_id)

    start_worker()
    await _reaches(cluster_id, "done", "failed")

    provider = provider_of(cluster_id)
    assert (provider.step, provider.error_code) == ("done", None)
    assert provider.run_seq > before.run_seq
    assert raw_credentials(cluster_id) == (None, None, None, None)
