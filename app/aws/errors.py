"""Our error hierarchy for AWS calls: the AWS error code is kept, AWS's message text never is."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

_SAFE_CODE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

_ACCESS_DENIED = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
    }
)
_EXPIRED = frozenset({"ExpiredToken", "ExpiredTokenException", "RequestExpired"})
_NOT_FOUND = frozenset({"ResourceNotFoundException", "NoSuchEntity", "NotFoundException"})
_ALREADY_EXISTS = frozenset({"AlreadyExistsException", "ResourceInUseException"})
_THROTTLED = frozenset(
    {"Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException"}
)


class AwsError(Exception):
    """An AWS call failed. `code` is AWS's error code or one of ours; safe to store and show."""

    retryable = False

    def __init__(self, code: str, operation: str) -> None:
        self.code = code if _SAFE_CODE.match(code) else "UnknownError"
        self.operation = operation
        super().__init__(f"AWS {operation} failed with {self.code}")


class AwsAccessDeniedError(AwsError):
    """The caller is not allowed to do this (or its credentials are not recognised)."""


class AwsCredentialsExpiredError(AwsError):
    """The temporary credentials used for the call have expired."""


class AwsNotFoundError(AwsError):
    """The named resource does not exist."""


class AwsAlreadyExistsError(AwsError):
    """A resource with this name exists already."""


class AwsValidationError(AwsError):
    """AWS refused the request's parameters."""


class AwsThrottledError(AwsError):
    """AWS asked us to slow down; try again later."""

    retryable = True


class AwsUnavailableError(AwsError):
    """AWS could not be reached or answered with a server error; try again later."""

    retryable = True


def error_from_client_error(exc: ClientError, operation: str) -> AwsError:
    """Classify a botocore ClientError by its code and HTTP status."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "UnknownError"))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    if code in _ACCESS_DENIED:
        return AwsAccessDeniedError(code, operation)
    if code in _EXPIRED:
        return AwsCredentialsExpiredError(code, operation)
    if code in _NOT_FOUND:
        return AwsNotFoundError(code, operation)
    if code in _ALREADY_EXISTS:
        return AwsAlreadyExistsError(code, operation)
    if code in _THROTTLED:
        return AwsThrottledError(code, operation)
    # CloudFormation reports a missing stack as a ValidationError; the message is the only
    # place that says so. It is read here and never stored.
    if code == "ValidationError" and "does not exist" in str(error.get("Message", "")):
        return AwsNotFoundError("StackNotFound", operation)
    if code == "ValidationError":
        return AwsValidationError(code, operation)
    if status >= 500:
        return AwsUnavailableError(code, operation)
    return AwsError(code, operation)


@contextmanager
def translate_errors(operation: str) -> Iterator[None]:
    """Turn botocore exceptions raised inside the block into AwsError, keeping `__cause__`."""
    try:
        yield
    except ClientError as exc:
        raise error_from_client_error(exc, operation) from exc
    except (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError) as exc:
        raise AwsUnavailableError("EndpointUnreachable", operation) from exc
    except NoCredentialsError as exc:
        raise AwsAccessDeniedError("NoCredentials", operation) from exc
    except BotoCoreError as exc:
        raise AwsError(type(exc).__name__, operation) from exc
