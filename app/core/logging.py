"""Structured logs (JSON in production) with one correlation id per request or job."""

from __future__ import annotations

import logging
import sys
import traceback
import uuid
from contextvars import ContextVar
from typing import TextIO

import structlog

correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)


def new_correlation_id() -> str:
    return uuid.uuid4().hex


def _add_correlation_id(
    _logger: object, _method: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    value = correlation_id.get()
    if value is not None:
        event_dict.setdefault("correlation_id", value)
    return event_dict


def format_exception_safely(exc: BaseException) -> str:
    """A traceback with the frames and exception types, but without exception messages.

    Messages of client exceptions (Kubernetes, AWS, HTTP) can carry response bodies or
    credentials, which must never reach a log.
    """
    te = traceback.TracebackException.from_exception(exc, capture_locals=False)
    current: traceback.TracebackException | None = te
    while current is not None:
        current._str = "(message withheld)"  # type: ignore[attr-defined]
        current = current.__cause__ or current.__context__
    return "".join(te.format())


class _RedactExceptions(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = f"{record.getMessage()}\n{format_exception_safely(record.exc_info[1])}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def _redact_structlog_exc(
    _logger: object, _method: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    exc_info = event_dict.pop("exc_info", None)
    if exc_info:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if exc is not None:
            event_dict["exception"] = format_exception_safely(exc)
    return event_dict


def default_format(stream: TextIO | None = None) -> str:
    """`console` for a person at a terminal, `json` for log collectors (pipes, files, pods)."""
    stream = stream or sys.stderr
    isatty = getattr(stream, "isatty", None)
    return "console" if isatty is not None and isatty() else "json"


# Lines that libraries print on every start and that say nothing an operator can act on.
_QUIET_PREFIXES = {
    # Each uvicorn server of a process logs these; the process logs its own banner once.
    "uvicorn.error": (
        "Started server process",
        "Finished server process",
        "Uvicorn running on",
        "Shutting down",
    ),
    "alembic.runtime.migration": ("Context impl", "Will assume"),
}


class _DropStartupChatter(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def _drop_color_message(
    _logger: object, _method: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    event_dict.pop("color_message", None)  # uvicorn's ANSI copy of the same message
    return event_dict


def configure_logging(log_format: str | None = None, level: str = "INFO") -> None:
    """Route structlog and standard-library logs to stderr in one format.

    `log_format` is `json` or `console`; unset picks `console` when stderr is a terminal.
    """
    log_format = log_format or default_format()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        _add_correlation_id,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, _redact_structlog_exc, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Route library logs (uvicorn, dramatiq, alembic, our stdlib loggers) through the same
    # renderer, with their `extra=` fields as keys.
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RedactExceptions())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                *shared,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(),
                _drop_color_message,
            ],
            processor=renderer,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The kubernetes client and urllib3 can log request and response bodies at DEBUG.
    # websockets logs every connection with a repr; the agent server logs what matters.
    for noisy in ("kubernetes", "urllib3", "botocore", "pika", "websockets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Alembic announces its plugins on every start.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    for name, prefixes in _QUIET_PREFIXES.items():
        logger = logging.getLogger(name)
        logger.filters[:] = [f for f in logger.filters if not isinstance(f, _DropStartupChatter)]
        logger.addFilter(_DropStartupChatter(prefixes))
