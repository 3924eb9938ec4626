"""The install log as Server-Sent Events: what the worker stores (scrubbed, bounded), streamed
by a request that never calls the cluster; `follow` sends new lines until the operation ends."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import anyio

from app.addons import operations
from app.addons.models import AddonStatus, ClusterAddon
from app.addons.settings import get_addon_settings
from app.core.db import session_scope, utcnow
from tests.addons.conftest import DemoCatalogue, sse_events
from tests.conftest import Api
from tests.kube.helpers import Project

PASSWORD = "correct-horse-battery"


def _insert(project_id: int, cluster_id: int, name: str) -> int:
    now = utcnow()
    with session_scope() as session:
        row = ClusterAddon(
            cluster_id=cluster_id,
            project_id=project_id,
            name=name,
            status=AddonStatus.installing,
            chart="demo",
            chart_version="0.1.0",
            release_namespace=name,
            values_json=json.dumps({"password": PASSWORD}),
            operation="install",
            run_seq=1,
            operation_started_at=now - timedelta(seconds=5),
            job_created_at=now - timedelta(seconds=4),
            job_name=f"install-{name}",
        )
        session.add(row)
        session.flush()
        return row.id


def _record(addon_id: int, outcome: operations.Outcome) -> None:
    s = get_addon_settings()
    with session_scope() as session:
        run = operations.load(session, addon_id, _seq(addon_id), s)
        assert run is not None
        operations.record(session, run, outcome, utcnow(), s)


def _seq(addon_id: int) -> int:
    with session_scope() as session:
        return session.get_one(ClusterAddon, addon_id).run_seq


LOG_1 = (
    '2026-12-02T06:00:00.1Z Release "demo" does not exist. Installing it now.\n'
    "2026-12-02T06:00:00.12Z using password " + PASSWORD + "\n"
)
LOG_2 = (
    LOG_1 + "2026-12-02T06:00:01.123456789Z NAME: demo\n2026-12-02T06:00:01.2Z STATUS: deployed\n"
)


async def test_log_stream(
    admin: Api, test_catalogue: DemoCatalogue, allow_local_network: None
) -> None:
    name = test_catalogue.add()
    project = await Project.create(admin)
    created = await admin.post(
        f"{project.base}/clusters",
        {
            "name": "c",
            "environment_scope": "*",
            "kubernetes": {"api_url": "https://127.0.0.1:1", "token": "t"},
        },
    )
    assert created.status_code == 201, created.text
    cluster_id = created.json()["id"]
    base = f"{project.base}/clusters/{cluster_id}/addons/{name}/logs"

    # Never installed: the stream ends at once.
    events = sse_events((await admin.get(base)).text)
    assert events == [{"event": "end", "data": '{"status": "installable"}'}]

    addon_id = _insert(project.id, cluster_id, name)
    await anyio.to_thread.run_sync(_record, addon_id, operations.Outcome("waiting", log=LOG_1))
    response = await admin.get(base)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert [e["event"] for e in events] == ["log", "log", "end"]
    assert events[0]["data"] == 'Release "demo" does not exist. Installing it now.'
    assert events[0]["id"] == "2026-12-02T06:00:00.100000000Z"  # fixed width: sorts as text
    assert events[1]["data"] == "using password [redacted]"
    assert PASSWORD not in response.text

    # follow: the lines the worker reads later arrive, then the end with the final status.
    follow = asyncio.create_task(admin.get(base, params={"follow": "true"}))
    await asyncio.sleep(0.3)
    assert not follow.done()
    await anyio.to_thread.run_sync(
        _record, addon_id, operations.Outcome("succeeded", log=LOG_2, pod_started=True)
    )
    events = sse_events((await asyncio.wait_for(follow, 30)).text)
    assert [e.get("data") for e in events if e["event"] == "log"] == [
        'Release "demo" does not exist. Installing it now.',
        "using password [redacted]",
        "NAME: demo",
        "STATUS: deployed",
    ]
    assert events[-1] == {"event": "end", "data": '{"status": "installed"}'}

    # Resuming after the second line sends only what followed it.
    resumed = sse_events((await admin.get(base, headers={"Last-Event-ID": events[1]["id"]})).text)
    assert [e.get("data") for e in resumed] == [
        "NAME: demo",
        "STATUS: deployed",
        '{"status": "installed"}',
    ]

    # Reporters do not read install logs.
    reporter = admin.as_token(await admin.create_project_token(project.id, "reporter"))
    assert (await reporter.get(base)).status_code == 403
