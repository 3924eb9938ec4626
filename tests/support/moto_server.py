"""A real moto server (STS, CloudFormation, EKS, IAM) over HTTP on a random loopback port."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from moto.cloudformation.models import cloudformation_backends
from moto.server import ThreadedMotoServer
from moto.sts.models import AssumedRole, sts_backends

from app.aws.settings import get_aws_settings

# Credentials of clusterport's own identity in tests; moto accepts any until IAM
# authentication is switched on (see `set_iam_enforced`).
SERVICE_ACCESS_KEY_ID = "AKIACLUSTERPORTTEST0"
SERVICE_SECRET_ACCESS_KEY = "clusterport-test-secret"


@dataclass(frozen=True)
class MotoServer:
    """Handle on the running server: its URL and the few controls tests need."""

    endpoint_url: str

    def _post(self, path: str, body: bytes = b"") -> bytes:
        request = urllib.request.Request(
            self.endpoint_url + path,
            data=body,
            method="POST",
            # Not a form: moto reads the raw body of /moto-api/reset-auth.
            headers={"Content-Type": "application/octet-stream"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # loopback only
            data: bytes = response.read()
        return data

    def reset(self) -> None:
        """Forget every resource moto holds."""
        self._post("/moto-api/reset")

    def set_iam_enforced(self, enforced: bool) -> None:
        """Make moto check signatures and IAM policies (as AWS does) or accept any caller."""
        self._post("/moto-api/reset-auth", b"0" if enforced else b"inf")

    def set_stack_status(self, stack_name: str, status: str) -> None:
        """Put a stack in `status`, standing in for what CloudFormation itself does.

        moto completes every stack at once and never rolls back, so a test that needs a
        stack still in progress or in ROLLBACK_COMPLETE sets it here, in the server's own
        state; clusterport still reads it over HTTP through DescribeStacks.
        """
        for account in list(cloudformation_backends.values()):
            for backend in list(account.values()):
                for stack in backend.stacks.values():
                    if stack.name == stack_name and stack.status != "DELETE_COMPLETE":
                        stack.status = status
                        return
        raise LookupError(f"no stack named {stack_name} in moto")

    def stack_names(self) -> list[str]:
        """Names of the stacks moto holds that are not deleted, across accounts and regions."""
        return [
            stack.name
            for account in list(cloudformation_backends.values())
            for backend in list(account.values())
            for stack in backend.stacks.values()
            if stack.status != "DELETE_COMPLETE"
        ]


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """Start moto once per session on 127.0.0.1 and point clusterport's AWS calls at it."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLUSTERPORT_AWS_ENDPOINT_URL", f"http://{host}:{port}")
        patch.setenv("AWS_ACCESS_KEY_ID", SERVICE_ACCESS_KEY_ID)
        patch.setenv("AWS_SECRET_ACCESS_KEY", SERVICE_SECRET_ACCESS_KEY)
        patch.delenv("AWS_SESSION_TOKEN", raising=False)
        patch.delenv("AWS_PROFILE", raising=False)
        # No shared config and no instance metadata: the chain must never leave loopback.
        patch.setenv("AWS_CONFIG_FILE", "/dev/null")
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        get_aws_settings.cache_clear()
        try:
            yield MotoServer(endpoint_url=f"http://{host}:{port}")
        finally:
            get_aws_settings.cache_clear()
    server.stop()


@pytest.fixture
def moto(moto_server: MotoServer) -> Iterator[MotoServer]:
    """The session's moto server, emptied after the test."""
    try:
        yield moto_server
    finally:
        moto_server.set_iam_enforced(False)
        moto_server.reset()


def assumed_role_for_key(access_key_id: str) -> AssumedRole | None:
    """The AssumeRole session moto issued this access key to (as STS itself would know)."""
    for account in list(sts_backends.values()):
        for backend in list(account.values()):
            found = backend.get_assumed_role_from_access_key(access_key_id)
            if found is not None:
                return found
    return None


def assumed_roles() -> list[AssumedRole]:
    """Every AssumeRole session moto has issued since the last reset."""
    return [
        role
        for account in list(sts_backends.values())
        for backend in list(account.values())
        for role in backend.assumed_roles
    ]
