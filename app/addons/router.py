"""HTTP routes for cluster add-ons and the add-on catalogue."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, status
from fastapi.responses import StreamingResponse

from app.addons import repository, service
from app.addons.catalogue import catalogue
from app.addons.helm import tail_lines
from app.addons.models import BUSY
from app.addons.schemas import AddonList, AddonPut, AddonRead, CatalogueEntryRead, CatalogueRead
from app.addons.settings import get_addon_settings
from app.auth.dependencies import PrincipalDep, SessionDep
from app.auth.models import Role
from app.core.db import async_session
from app.core.validation import DNSLabel

router = APIRouter(
    prefix="/api/v1/projects/{project_id}/clusters/{cluster_id}/addons", tags=["add-ons"]
)
catalogue_router = APIRouter(prefix="/api/v1/addon-catalogue", tags=["add-ons"])


@catalogue_router.get("", operation_id="list_addon_catalogue")
async def list_addon_catalogue(principal: PrincipalDep) -> CatalogueRead:
    """Every add-on that can be installed: chart, pinned version, values schema, defaults."""
    return CatalogueRead(items=[CatalogueEntryRead.of(e) for e in service.catalogue_entries()])


@router.get("", operation_id="list_addons")
async def list_addons(
    project_id: int, cluster_id: int, session: SessionDep, principal: PrincipalDep
) -> AddonList:
    """Every catalogue add-on with its status on this cluster (`installable` when never
    installed)."""
    pairs = await service.list_addons(session, principal, project_id, cluster_id)
    return AddonList(items=[AddonRead.of(entry, row) for entry, row in pairs])


@router.get("/{name}", operation_id="get_addon")
async def get_addon(
    project_id: int, cluster_id: int, name: DNSLabel, session: SessionDep, principal: PrincipalDep
) -> AddonRead:
    entry, row = await service.get(session, principal, project_id, cluster_id, name, Role.reporter)
    return AddonRead.of(entry, row)


@router.put("/{name}", status_code=status.HTTP_202_ACCEPTED, operation_id="put_addon")
async def put_addon(
    project_id: int,
    cluster_id: int,
    name: DNSLabel,
    data: AddonPut,
    session: SessionDep,
    principal: PrincipalDep,
) -> AddonRead:
    """Install or upgrade the add-on (maintainer). The values are checked against the chart's
    schema first; then a Job in namespace `clusterport-addons` runs `helm upgrade --install
    --atomic --wait`. Watch `status`: scheduled -> installing -> installed, or errored with a
    code (an upgrade goes through `updating`). 409 while another operation runs."""
    row = await service.put(session, principal, project_id, cluster_id, name, data)
    return AddonRead.of(service.entry_for(name), row)


@router.delete("/{name}", status_code=status.HTTP_202_ACCEPTED, operation_id="delete_addon")
async def delete_addon(
    project_id: int, cluster_id: int, name: DNSLabel, session: SessionDep, principal: PrincipalDep
) -> AddonRead:
    """Uninstall the add-on (maintainer): a Job runs `helm uninstall`; status goes
    uninstalling -> uninstalled."""
    row = await service.uninstall(session, principal, project_id, cluster_id, name)
    return AddonRead.of(catalogue().get(name), row)


@router.post("/{name}/check", status_code=status.HTTP_202_ACCEPTED, operation_id="check_addon")
async def check_addon(
    project_id: int, cluster_id: int, name: DNSLabel, session: SessionDep, principal: PrincipalDep
) -> AddonRead:
    """Queue a drift and health check now (developer); it also runs every
    `CLUSTERPORT_ADDONS_HEALTH_INTERVAL_SECONDS`. The add-on turns `degraded` with a code when
    the release differs from what was asked or its workloads are not available."""
    row = await service.request_check(session, principal, project_id, cluster_id, name)
    return AddonRead.of(catalogue().get(name), row)


def _event(kind: str, data: str, event_id: str | None = None) -> str:
    lines = [f"id: {event_id}"] if event_id else []
    lines.append(f"event: {kind}")
    lines += [f"data: {part}" for part in data.split("\n")]
    return "\n".join(lines) + "\n\n"


@router.get(
    "/{name}/logs",
    operation_id="stream_addon_logs",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": "Server-Sent Events: `log` events (one line of the install pod's "
            "log each, secrets scrubbed, `id` = the line's timestamp), then one `end` event "
            "with the add-on's status.",
        }
    },
)
async def stream_addon_logs(
    project_id: int,
    cluster_id: int,
    name: DNSLabel,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    follow: Annotated[
        bool, Query(description="Keep streaming until the operation under way ends.")
    ] = False,
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
) -> StreamingResponse:
    """The install pod's log (developer). Workers read it through the cluster's API while an
    operation runs and keep a scrubbed tail; this stream sends that tail and, with
    `follow=true`, the new lines as they are read, until the operation ends. When the pod is
    gone, the stored tail is what there is."""
    _, row = await service.get(session, principal, project_id, cluster_id, name, Role.developer)
    addon_id = row.id if row is not None else None
    interval = get_addon_settings().poll_interval_seconds

    async def events() -> AsyncIterator[str]:
        sent = last_event_id or ""
        while True:
            if addon_id is None:
                yield _event("end", json.dumps({"status": "installable"}))
                return
            async with async_session() as reader:
                view = await repository.log_view(reader, addon_id)
            if view is None:
                yield _event("end", json.dumps({"status": "gone"}))
                return
            for stamp, text in tail_lines(view.log_tail):
                if stamp > sent:
                    yield _event("log", text, stamp)
                    sent = stamp
            if not follow or view.status not in BUSY:
                yield _event("end", json.dumps({"status": view.status}))
                return
            await asyncio.sleep(interval)
            if await request.is_disconnected():
                return

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
