"""Lost work is findable: operations under way and health checks whose next run never came,
and stale or duplicate messages do nothing."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from app.addons import operations, repository
from app.addons.models import AddonStatus, ClusterAddon
from app.addons.settings import get_addon_settings
from app.clusters.models import Cluster
from app.core.db import session_scope, utcnow
from app.projects.models import Project


def _addon(session: Session, cluster_id: int, project_id: int, name: str, **fields: Any) -> int:
    now = utcnow()
    row = ClusterAddon(
        cluster_id=cluster_id,
        project_id=project_id,
        name=name,
        chart="demo",
        chart_version="0.1.0",
        release_namespace=name,
        values_json=json.dumps({}),
        operation="install",
        run_seq=3,
        operation_started_at=now,
        **fields,
    )
    session.add(row)
    session.flush()
    return row.id


def test_pending_without_live_job_and_overdue_checks() -> None:
    now = utcnow()
    stall = timedelta(seconds=60)
    with session_scope() as session:
        project = Project(name="p")
        session.add(project)
        session.flush()
        cluster = Cluster(project_id=project.id, name="c", environment_scope="*")
        session.add(cluster)
        session.flush()
        old = now - timedelta(minutes=5)
        lost = _addon(session, cluster.id, project.id, "lost", status="installing", next_run_at=old)
        _addon(session, cluster.id, project.id, "live", status="updating", next_run_at=now)
        _addon(session, cluster.id, project.id, "done", status="installed", next_run_at=old)
        overdue = _addon(
            session, cluster.id, project.id, "due", status="degraded", next_health_check_at=old
        )
        _addon(
            session, cluster.id, project.id, "fine", status="installed", next_health_check_at=now
        )
    with session_scope() as session:
        assert repository.operations_pending_without_live_job(
            session, now=now, stall_after=stall
        ) == [(lost, 3)]
        assert repository.health_checks_overdue(session, now=now, stall_after=stall) == [overdue]
        s = get_addon_settings()
        # A message with an older run number (a duplicate, or one overtaken) is dropped.
        assert operations.load(session, lost, 2, s) is None
        run = operations.load(session, lost, 3, s)
        assert run is not None and run.spec.job_name == "install-lost"
        # Once a run is recorded, the same message again does nothing.
        following = operations.record(session, run, operations.Outcome("waiting"), now, s)
        assert following is not None and following.run_seq == 4
        assert operations.record(session, run, operations.Outcome("waiting"), now, s) is None
        row = session.get_one(ClusterAddon, lost)
        assert row.status == AddonStatus.installing and row.next_run_at is not None
