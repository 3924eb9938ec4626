"""Our error types: each has an HTTP status and a stable `code`, rendered in one JSON shape."""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    """An error a client can act on. `message` is ours, never text from a cluster or AWS."""

    status_code = 400
    code = "bad_request"
    message = "The request is not valid."

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or type(self).message
        self.code = code or type(self).code
        self.details = details
        self.headers = headers
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return {"error": body}


class BadRequestError(AppError):
    status_code = 400
    code = "bad_request"


class UnauthorizedError(AppError):
    status_code = 401
    code = "unauthorized"
    message = "A valid token is required: send `Authorization: Bearer <token>`."


class ForbiddenError(AppError):
    status_code = 403
    code = "forbidden"
    message = "Your token's role does not allow this action."


class NotFoundError(AppError):
    status_code = 404
    code = "not_found"
    message = "The resource does not exist or you cannot see it."


class ConflictError(AppError):
    status_code = 409
    code = "conflict"
    message = "The request conflicts with an existing resource."


class UnprocessableError(AppError):
    status_code = 422
    code = "invalid"
    message = "The request could not be processed."


class RateLimitedError(AppError):
    status_code = 429
    code = "rate_limited"
    message = "Too many requests; retry later."


class ServiceUnavailableError(AppError):
    status_code = 503
    code = "unavailable"
    message = "The service is temporarily unavailable."
