"""CloudFormation: create a stack idempotently, read its status and outputs, delete it."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from app.aws.credentials import TemporaryCredentials, cloudformation_client
from app.aws.errors import AwsAlreadyExistsError, translate_errors


class StackPhase(StrEnum):
    """What a stack status means for whoever waits on it."""

    IN_PROGRESS = "in_progress"
    COMPLETE = "complete"
    FAILED = "failed"


_COMPLETE = frozenset({"CREATE_COMPLETE", "UPDATE_COMPLETE"})
_IN_PROGRESS = frozenset(
    {"CREATE_PENDING", "CREATE_IN_PROGRESS", "REVIEW_IN_PROGRESS", "UPDATE_IN_PROGRESS"}
)


@dataclass(frozen=True)
class StackState:
    """One DescribeStacks answer: the status and the outputs by key."""

    stack_id: str
    status: str
    outputs: Mapping[str, str]

    @property
    def phase(self) -> StackPhase:
        """Complete, still going, or failed (rollbacks, deletes and *_FAILED all count)."""
        if self.status in _COMPLETE:
            return StackPhase.COMPLETE
        if self.status in _IN_PROGRESS:
            return StackPhase.IN_PROGRESS
        return StackPhase.FAILED


def create_stack(
    *,
    region: str,
    credentials: TemporaryCredentials,
    name: str,
    template_body: str,
    parameters: Mapping[str, str],
    tags: Mapping[str, str] | None = None,
) -> str:
    """Create stack `name` and return its id; if it exists already, return the existing id.

    The name is the caller's deterministic key, so a retried step finds the stack it made
    instead of creating a second one. The client request token makes AWS's own retries safe.
    """
    token = "clusterport-" + hashlib.sha256(name.encode()).hexdigest()[:40]
    client = cloudformation_client(region, credentials)
    try:
        with translate_errors("CreateStack"):
            response = client.create_stack(
                StackName=name,
                TemplateBody=template_body,
                Parameters=[
                    {"ParameterKey": key, "ParameterValue": value}
                    for key, value in parameters.items()
                ],
                Capabilities=["CAPABILITY_IAM"],
                OnFailure="ROLLBACK",
                ClientRequestToken=token,
                Tags=[{"Key": key, "Value": value} for key, value in (tags or {}).items()],
            )
        return response["StackId"]
    except AwsAlreadyExistsError:
        return describe_stack(region=region, credentials=credentials, name=name).stack_id


def describe_stack(*, region: str, credentials: TemporaryCredentials, name: str) -> StackState:
    """Status and outputs of stack `name` (raises AwsNotFoundError when there is none)."""
    with translate_errors("DescribeStacks"):
        response = cloudformation_client(region, credentials).describe_stacks(StackName=name)
    stack = response["Stacks"][0]
    outputs = {
        out["OutputKey"]: out["OutputValue"]
        for out in stack.get("Outputs", [])
        if "OutputKey" in out and "OutputValue" in out
    }
    return StackState(stack_id=stack["StackId"], status=stack["StackStatus"], outputs=outputs)


def delete_stack(*, region: str, credentials: TemporaryCredentials, name: str) -> None:
    """Ask CloudFormation to delete stack `name`; deleting a missing stack succeeds."""
    with translate_errors("DeleteStack"):
        cloudformation_client(region, credentials).delete_stack(StackName=name)
