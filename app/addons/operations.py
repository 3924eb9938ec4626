"""An add-on operation as a step machine: each run does one step and says when to run next.

Steps: prepare the managed namespace, service account, binding and values Secret, and create
the Job -> look at the Job (a delayed re-enqueue, never a sleep) until it succeeds, fails or
does not start in time, keeping a scrubbed tail of its pod's log. A run carries the record's
`run_seq`; older numbers are dropped, so redelivered or duplicated messages do nothing. Every
step is idempotent: a run after a crash finds the Job it created by its operation annotation.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.addons import helm, installer
from app.addons.catalogue import catalogue
from app.addons.models import BUSY, AddonStatus, ClusterAddon, Operation, operation_fields
from app.addons.settings import AddonSettings
from app.core.ssrf import UnsafeURLError
from app.kube import KubeClient
from app.kube.errors import KubeError

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Run:
    """What one run needs, read from the record inside a short transaction."""

    addon_id: int
    cluster_id: int
    run_seq: int
    spec: helm.InstallSpec
    job_created_at: datetime | None
    # The tail stored by earlier runs: what a failure is read from when the last read fails.
    stored_log: str
    # Runs in a row whose read of the finished pod's log failed.
    log_retries: int


@dataclass
class Outcome:
    kind: Literal["job_created", "waiting", "succeeded", "failed"]
    code: str | None = None
    log: str = ""
    pod_started: bool = False
    transient: bool = False
    delay: float | None = None
    retry_log: bool = False


@dataclass(frozen=True)
class NextRun:
    addon_id: int
    run_seq: int
    delay_seconds: float


def load(session: Session, addon_id: int, run_seq: int, s: AddonSettings) -> Run | None:
    """The run for this message, or None when it is stale, a duplicate or nothing is under way."""
    addon = session.get(ClusterAddon, addon_id)
    if addon is None or addon.run_seq != run_seq or addon.status not in BUSY:
        return None
    entry = catalogue().get(addon.name)
    spec = helm.InstallSpec(
        addon=addon.name,
        operation=addon.operation,
        operation_key=helm.operation_key(addon.operation, addon.operation_started_at),
        chart_ref=addon.chart,
        repository=entry.repository if entry is not None else None,
        version=addon.chart_version,
        release_namespace=addon.release_namespace,
        values=json.loads(addon.values_json),
        cluster_role=entry.install_cluster_role if entry is not None else "cluster-admin",
        image=s.installer_image,
        helm_timeout_seconds=s.helm_timeout_seconds,
        job_ttl_seconds=s.job_ttl_seconds,
        node_selector=s.installer_node_selector,
        pod_labels=s.installer_pod_labels,
    )
    return Run(
        addon.id,
        addon.cluster_id,
        run_seq,
        spec,
        addon.job_created_at,
        addon.log_tail or "",
        addon.transient_failures,
    )


MIN_POLL_SECONDS = 0.2
# How many runs try to read a finished pod's log before the outcome is stored without it.
FINAL_LOG_READS = 5


def poll_delay(run: Run, now: datetime, s: AddonSettings) -> float:
    """Look often while a Job is young (most installs of small charts end within seconds), then
    less: a tenth of the time it has run, between 0.2 s and the configured interval."""
    started = run.job_created_at or now
    elapsed = (now - started).total_seconds()
    return min(s.poll_interval_seconds, max(MIN_POLL_SECONDS, elapsed / 10))


def step(kube: KubeClient, run: Run, now: datetime, s: AddonSettings) -> Outcome:
    """One step against the cluster (raises KubeError when the cluster fails us)."""
    spec = run.spec
    if run.job_created_at is None:
        installer.prepare(kube, spec)
        if installer.start_job(kube, spec):
            return Outcome("job_created", delay=MIN_POLL_SECONDS)
        return Outcome("waiting", delay=poll_delay(run, now, s))
    state = installer.job_state(kube, spec)
    if state is None:
        return Outcome("failed", code="install_job_gone")
    read = installer.pod_log(kube, state.pod_name) if state.pod_started and state.pod_name else ""
    finished = state.succeeded or state.failed
    if read is None and finished and run.log_retries < FINAL_LOG_READS:
        # The final log is what a user debugs with: try to read it again shortly.
        return Outcome("waiting", retry_log=True, delay=MIN_POLL_SECONDS)
    text = read or ""
    if state.succeeded:
        if spec.uninstall:
            installer.clean_up(kube, spec)
        return Outcome("succeeded", log=text, pod_started=True)
    if state.failed:
        code = helm.failure_code(state, text or run.stored_log)
        return Outcome("failed", code=code, log=text)
    if not state.pod_started and now - run.job_created_at >= timedelta(
        seconds=s.start_timeout_seconds
    ):
        installer.delete_job(kube, spec)
        return Outcome("failed", code=helm.not_started_code(state))
    return Outcome(
        "waiting", log=text, pod_started=state.pod_started, delay=poll_delay(run, now, s)
    )


def kube_failure(exc: KubeError | UnsafeURLError) -> Outcome:
    transient = isinstance(exc, KubeError) and exc.transient
    return Outcome("failed", code=exc.code, transient=transient)


_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z ")


def _normalise_stamps(text: str) -> str:
    """Fixed-width nanosecond timestamps, so that they sort as text; lines without one (they
    should not exist) take the previous line's."""
    out = []
    previous = "0000-00-00T00:00:00.000000000Z"
    for line in text.splitlines():
        match = _STAMP.match(line)
        if match:
            previous = f"{match.group(1)}.{(match.group(2) or '').ljust(9, '0')}Z"
            line = line[match.end() :]
        out.append(f"{previous} {line}")
    return "\n".join(out)


def _finish(addon: ClusterAddon, status: AddonStatus, now: datetime) -> None:
    addon.status = status
    addon.finished_at = now
    addon.next_run_at = None


def record(
    session: Session, run: Run, outcome: Outcome, now: datetime, s: AddonSettings
) -> NextRun | None:
    """Store what the step found (if the run is still current) and return the next run."""
    addon = session.execute(
        select(ClusterAddon).where(ClusterAddon.id == run.addon_id).with_for_update()
    ).scalar_one_or_none()
    if addon is None or addon.run_seq != run.run_seq or addon.status not in BUSY:
        return None
    if outcome.log:
        tail = helm.scrub(_normalise_stamps(outcome.log), run.spec.values)
        addon.log_tail = helm.bounded_tail(tail, s.log_tail_bytes)
    if outcome.pod_started and addon.pod_started_at is None:
        addon.pod_started_at = now
    delay = outcome.delay
    if outcome.kind == "failed" and outcome.transient:
        addon.transient_failures += 1
        if addon.transient_failures < s.max_transient_failures:
            log.info("addon_step_retry", addon_id=addon.id, code=outcome.code)
            outcome = Outcome("waiting")
            delay = s.retry_delay_seconds
    elif outcome.retry_log:
        addon.transient_failures += 1
    elif outcome.kind != "failed":
        addon.transient_failures = 0
    if outcome.kind == "job_created":
        addon.job_created_at = now
        addon.job_name = run.spec.job_name
        if addon.status == AddonStatus.scheduled:
            addon.status = AddonStatus.installing
    elif outcome.kind == "succeeded":
        addon.error_code = None
        if addon.operation == Operation.uninstall:
            _finish(addon, AddonStatus.uninstalled, now)
            addon.installed_version = None
            addon.next_health_check_at = None
        else:
            _finish(addon, AddonStatus.installed, now)
            addon.installed_version = addon.chart_version
            addon.next_health_check_at = now + timedelta(seconds=s.health_interval_seconds)
        log.info("addon_operation_succeeded", addon_id=addon.id, operation=addon.operation)
        return None
    elif outcome.kind == "failed":
        addon.error_code = outcome.code
        _finish(addon, AddonStatus.errored, now)
        log.warning(
            "addon_operation_failed",
            addon_id=addon.id,
            operation=addon.operation,
            code=outcome.code,
        )
        return None
    addon.run_seq += 1
    wait = delay if delay is not None else s.poll_interval_seconds
    addon.next_run_at = now + timedelta(seconds=wait)
    return NextRun(addon.id, addon.run_seq, wait)


# --- a cluster being deleted ---------------------------------------------------------------------


@dataclass(frozen=True)
class Removal:
    """Where the add-ons of a cluster being deleted stand."""

    started: list[tuple[int, int]]  # (add-on id, run_seq) of uninstalls started now
    busy: int  # operations still under way
    failed: list[str]  # names whose uninstall failed


def remove_for_cluster(session: Session, cluster_id: int, *, start: bool) -> Removal:
    """With `start`, begin an uninstall of every add-on that holds a release and is idle; then
    say what is under way and what failed. Rows are locked, so an API request cannot start an
    operation in between (it also refuses a cluster that is being deleted)."""
    query = select(ClusterAddon).where(ClusterAddon.cluster_id == cluster_id).with_for_update()
    rows = list(session.scalars(query))
    started: list[tuple[int, int]] = []
    for row in rows:
        if start and row.status not in BUSY and row.holds_a_release:
            for column, value in operation_fields(
                Operation.uninstall, AddonStatus.uninstalling
            ).items():
                setattr(row, column, value)
            row.run_seq += 1
            started.append((row.id, row.run_seq))
    failed = [
        row.name
        for row in rows
        if row.status == AddonStatus.errored and row.operation == Operation.uninstall
    ]
    return Removal(started, sum(row.status in BUSY for row in rows), sorted(failed))


# --- drift and health --------------------------------------------------------------------------


@dataclass(frozen=True)
class HealthCheck:
    addon_id: int
    cluster_id: int
    release: str
    namespace: str
    version: str
    values: dict[str, Any]


def load_health_check(session: Session, addon_id: int, now: datetime) -> HealthCheck | None:
    """The check to run, or None when the add-on is not installed or the check is not due."""
    addon = session.get(ClusterAddon, addon_id)
    if addon is None or addon.status not in (AddonStatus.installed, AddonStatus.degraded):
        return None
    due = addon.next_health_check_at
    if due is not None and due > now + timedelta(seconds=1):
        return None  # a duplicate of a check that already ran
    return HealthCheck(
        addon.id,
        addon.cluster_id,
        addon.name,
        addon.release_namespace,
        addon.chart_version,
        json.loads(addon.values_json),
    )


def record_health(
    session: Session, check: HealthCheck, code: str | None, now: datetime, s: AddonSettings
) -> float | None:
    """Store the result (`degraded` with a code, or back to `installed`); the next check's
    delay, or None when the add-on moved on meanwhile."""
    addon = session.execute(
        select(ClusterAddon).where(ClusterAddon.id == check.addon_id).with_for_update()
    ).scalar_one_or_none()
    if addon is None or addon.status not in (AddonStatus.installed, AddonStatus.degraded):
        return None
    if code is None:
        addon.status = AddonStatus.installed
        addon.error_code = None
    else:
        if addon.status != AddonStatus.degraded or addon.error_code != code:
            log.warning("addon_degraded", addon_id=addon.id, code=code)
        addon.status = AddonStatus.degraded
        addon.error_code = code
    addon.health_checked_at = now
    addon.next_health_check_at = now + timedelta(seconds=s.health_interval_seconds)
    return s.health_interval_seconds
