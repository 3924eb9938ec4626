"""Fixtures for fault tests: an own Postgres server, an own vhost and clusterport subprocesses."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.stack import ControlPlane, OwnPostgres, OwnVhost, Stack


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[OwnPostgres]:
    server = OwnPostgres()
    try:
        server.init()
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="module")
def own_vhost() -> Iterator[OwnVhost]:
    if shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmqctl not found: fault tests need the local RabbitMQ (scripts/services)")
    vhost = OwnVhost(os.environ["CLUSTERPORT_TEST_BROKER_URL"])
    try:
        yield vhost
    finally:
        vhost.unblock()
        vhost.delete()


@pytest.fixture(scope="module")
def stack(own_postgres: OwnPostgres, own_vhost: OwnVhost) -> Iterator[Stack]:
    """The API process, up for the whole module; each test starts the workers it needs."""
    workdir = Path(tempfile.mkdtemp(prefix="cp-faults-"))
    deployment = Stack(own_postgres.url, own_vhost.url, workdir)
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.stop()
        if not os.environ.get("CLUSTERPORT_KEEP_FAULT_LOGS"):
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def workers(stack: Stack) -> Iterator[Stack]:
    """The stack with one worker process; every worker a test started is stopped after it."""
    stack.start_worker()
    try:
        yield stack
    finally:
        for worker in list(stack.workers):
            stack.kill(worker)
        stack.workers.clear()


@pytest.fixture(scope="module")
def own_control_plane() -> Iterator[ControlPlane]:
    """A kube-apiserver + etcd + controller-manager of our own, to stop and restart."""
    plane = ControlPlane.up(Path(tempfile.mkdtemp(prefix="cp-faults-kube-")))
    try:
        yield plane
    finally:
        plane.down()
