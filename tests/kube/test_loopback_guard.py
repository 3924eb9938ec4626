"""Tests and their subprocesses cannot dial a non-loopback address (tests/support/loopback.py)."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from app.kube import KubeClient, KubeError


def test_public_address_is_refused_before_any_packet() -> None:
    with socket.socket() as s, pytest.raises(OSError, match="only connect to loopback"):
        s.connect(("93.184.216.34", 443))  # refused by the guard, never sent


def test_subprocesses_are_guarded_too() -> None:
    code = "import socket; socket.socket().connect(('93.184.216.34', 443))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0
    assert "only connect to loopback" in result.stderr


def test_worker_client_to_public_cluster_fails_locally(test_ca_pem: str) -> None:
    # What a worker would do for a cluster registered at a public address during a test.
    with (
        KubeClient.from_platform(
            "https://93.184.216.34:6443", test_ca_pem, "token", allow_local=False, max_attempts=1
        ) as kube,
        pytest.raises(KubeError) as excinfo,
    ):
        kube.version()
    assert excinfo.value.code == "unreachable"
    assert "only connect to loopback" in str(excinfo.value.__cause__)
