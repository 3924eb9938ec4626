"""The Dramatiq broker: RabbitMQ with publisher confirms, or in-process for `clusterport serve`."""

from __future__ import annotations

import logging
import time
from typing import Any

import dramatiq
import structlog
from dramatiq.broker import MessageProxy
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage, Middleware
from prometheus_client import Counter, Histogram

from app.core.logging import correlation_id
from app.core.outages import (
    DATABASE,
    is_database_outage,
    is_transient,
    outages,
    quiet_pika_connection_logs,
)
from app.core.settings import Settings

log = structlog.get_logger(__name__)

JOBS = Counter("clusterport_jobs_total", "Jobs processed", ["actor", "outcome"])
JOB_SECONDS = Histogram("clusterport_job_seconds", "Job processing time", ["actor"])


class CorrelationMiddleware(Middleware):
    """Carries the request's correlation id into the jobs it enqueued, and counts jobs."""

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        correlation_id.set(message.options.get("correlation_id") or message.message_id)
        message.options["_started"] = time.monotonic()

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        started = message.options.pop("_started", None)
        if started is not None:
            JOB_SECONDS.labels(message.actor_name).observe(time.monotonic() - started)
        JOBS.labels(message.actor_name, "error" if exception else "ok").inc()
        if exception is None:
            outages.up(DATABASE)
        elif is_database_outage(exception):
            outages.down(DATABASE, exception)  # once per outage, not once per job
        elif not isinstance(exception, dramatiq.Retry):
            # Log the type only: exception text may carry cluster or AWS output.
            log.warning("job_failed", actor=message.actor_name, error=type(exception).__name__)
        correlation_id.set(None)

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        correlation_id.set(None)


class _TransientFailuresWithoutTraceback(logging.Filter):
    """Dramatiq logs every exception an actor raises with its traceback at ERROR. A transient
    one (an outage, a cluster that is briefly away) is retried: one line without the stack."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and is_transient(exc):
            record.msg, record.args = "job_retrying error=%s", (type(exc).__name__,)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def create_broker(settings: Settings) -> dramatiq.Broker:
    broker: dramatiq.Broker
    if settings.broker_url is not None:
        broker = RabbitmqBroker(
            url=settings.broker_url.get_secret_value(),
            confirm_delivery=True,
        )
    else:
        broker = StubBroker()
        broker.emit_after("process_boot")
    broker.add_middleware(CorrelationMiddleware())
    broker.add_middleware(CurrentMessage())
    worker_log = logging.getLogger("dramatiq.worker.WorkerThread")
    if not any(isinstance(f, _TransientFailuresWithoutTraceback) for f in worker_log.filters):
        worker_log.addFilter(_TransientFailuresWithoutTraceback())
    quiet_pika_connection_logs()
    return broker


def setup_broker(settings: Settings) -> dramatiq.Broker:
    """Install the process-wide broker; actors declared after this bind to it."""
    broker = create_broker(settings)
    dramatiq.set_broker(broker)
    return broker
