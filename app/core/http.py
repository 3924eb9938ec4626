"""HTTP plumbing for the API: error rendering and the per-request middleware."""

from __future__ import annotations

import re
import time
from typing import Any

import structlog
from dramatiq.errors import BrokerError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pika.exceptions import AMQPError
from prometheus_client import Counter, Histogram
from sqlalchemy import exc as sa_exc
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import AppError
from app.core.logging import correlation_id, new_correlation_id
from app.core.outages import BROKER, DATABASE, is_database_outage, outages
from app.core.pagination import MAX_ID

log = structlog.get_logger("clusterport.http")

# What a client is told to wait before trying again during an outage.
OUTAGE_RETRY_AFTER_SECONDS = 5

REQUESTS = Counter("clusterport_http_requests_total", "API requests", ["method", "route", "status"])
LATENCY = Histogram("clusterport_http_request_seconds", "API request latency", ["method", "route"])
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
_LONG_NUMBER = re.compile(r"/([0-9]{19,})(?=/|$)")


def _id_out_of_range(path: str) -> bool:
    """A path segment of digits beyond a 64-bit id names nothing that can exist.

    Checked once here instead of bounding every `{x_id}: int` path parameter of every route:
    the database would otherwise fail on the out-of-range value with a 500.
    """
    return any(int(match) > MAX_ID for match in _LONG_NUMBER.findall(path))


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message, **extra}
    return JSONResponse({"error": body}, status_code=status)


async def _app_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    response = JSONResponse(exc.to_dict(), status_code=exc.status_code)
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Never echo the input back: it may hold a token.
    details = [
        {"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"], "type": err["type"]}
        for err in exc.errors()
    ]
    return _error(
        422, "validation_failed", "The request body or parameters are invalid.", details=details
    )


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    return _error(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail))


async def _integrity_error(_: Request, exc: Exception) -> JSONResponse:
    # A concurrent request won a uniqueness race that our own checks looked for first.
    return _error(409, "conflict", "The request conflicts with an existing resource.")


def _unavailable(what: str, exc: Exception) -> JSONResponse:
    outages.down(what, exc)  # one log line per outage, not a traceback per request
    response = _error(
        503, f"{what}_unavailable", f"The {what} is unreachable; retry in a few seconds."
    )
    response.headers["Retry-After"] = str(OUTAGE_RETRY_AFTER_SECONDS)
    return response


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    if not is_database_outage(exc):
        return await _unexpected(request, exc)
    return _unavailable(DATABASE, exc)


async def _broker_error(_: Request, exc: Exception) -> JSONResponse:
    return _unavailable(BROKER, exc)


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled_error", error=type(exc).__name__)
    return _error(500, "internal_error", "clusterport hit an internal error; it has been logged.")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(IntegrityError, _integrity_error)
    # Without their own handlers these would reach Starlette's error middleware, which logs a
    # traceback per request.
    app.add_exception_handler(sa_exc.DBAPIError, _database_error)
    app.add_exception_handler(sa_exc.TimeoutError, _database_error)
    app.add_exception_handler(BrokerError, _broker_error)
    app.add_exception_handler(AMQPError, _broker_error)
    app.add_exception_handler(Exception, _unexpected)


class RequestContextMiddleware:
    """Binds a correlation id (from X-Request-ID when sane), logs and measures each request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.match(incoming) else new_correlation_id()
        token = correlation_id.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            if _id_out_of_range(scope["path"]):
                response = _error(404, "not_found", "The resource does not exist.")
                await response(scope, receive, send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            elapsed = time.perf_counter() - started
            REQUESTS.labels(scope["method"], template, str(status)).inc()
            LATENCY.labels(scope["method"], template).observe(elapsed)
            log.info(
                "request",
                method=scope["method"],
                route=template,
                status=status,
                ms=round(elapsed * 1000, 2),
            )
            correlation_id.reset(token)
