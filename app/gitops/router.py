"""HTTP routes for GitOps: sources, environments, deployments, and the webhook endpoint."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.responses import StreamingResponse

from app.auth.dependencies import PrincipalDep, SessionDep
from app.auth.models import Role
from app.core.errors import AppError
from app.core.pagination import Page, PageParams, make_page, page_params
from app.gitops import repository, service
from app.gitops.schemas import (
    DeploymentRead,
    EnvironmentCreate,
    EnvironmentRead,
    EnvironmentUpdate,
    HookAccepted,
    SourceCreate,
    SourceCreated,
    SourceRead,
    SourceUpdate,
    SyncRequest,
)

router = APIRouter(prefix="/api/v1/projects/{project_id}/gitops", tags=["gitops"])
hooks_router = APIRouter(prefix="/api/v1/hooks", tags=["gitops"])


@router.post("/sources", status_code=status.HTTP_201_CREATED, operation_id="create_git_source")
async def create_source(
    project_id: int, data: SourceCreate, session: SessionDep, principal: PrincipalDep
) -> SourceCreated:
    """Register a manifest repository (maintainer). The answer holds the webhook path and, when
    you sent none, a generated webhook secret: it is shown only now."""
    source, generated = await service.create_source(session, principal, project_id, data)
    read = SourceRead.of(source, has_token=data.token is not None)
    return SourceCreated(**read.model_dump(), webhook_secret=generated)


@router.get("/sources", operation_id="list_git_sources")
async def list_sources(
    project_id: int,
    session: SessionDep,
    principal: PrincipalDep,
    params: Annotated[PageParams, Depends(page_params)],
) -> Page[SourceRead]:
    principal.require_project(project_id, Role.reporter)
    rows, cursor = make_page(await repository.list_sources(session, project_id, params), params)
    tokens = await repository.sources_with_token(session, [r.id for r in rows])
    items = [SourceRead.of(r, has_token=r.id in tokens) for r in rows]
    return Page(items=items, next_cursor=cursor)


@router.get("/sources/{source_id}", operation_id="get_git_source")
async def get_source(
    project_id: int, source_id: int, session: SessionDep, principal: PrincipalDep
) -> SourceRead:
    source = await service.get_source(session, principal, project_id, source_id, Role.reporter)
    return SourceRead.of(source, has_token=await repository.source_has_token(session, source.id))


@router.patch("/sources/{source_id}", operation_id="update_git_source")
async def update_source(
    project_id: int,
    source_id: int,
    data: SourceUpdate,
    session: SessionDep,
    principal: PrincipalDep,
) -> SourceRead:
    source = await service.update_source(session, principal, project_id, source_id, data)
    return SourceRead.of(source, has_token=await repository.source_has_token(session, source.id))


@router.delete(
    "/sources/{source_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="delete_git_source",
)
async def delete_source(
    project_id: int, source_id: int, session: SessionDep, principal: PrincipalDep
) -> Response:
    await service.delete_source(session, principal, project_id, source_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/environments", status_code=status.HTTP_201_CREATED, operation_id="create_gitops_environment"
)
async def create_environment(
    project_id: int, data: EnvironmentCreate, session: SessionDep, principal: PrincipalDep
) -> EnvironmentRead:
    """Bind a source to a cluster and namespace (maintainer)."""
    return EnvironmentRead.of(
        await service.create_environment(session, principal, project_id, data)
    )


@router.get("/environments", operation_id="list_gitops_environments")
async def list_environments(
    project_id: int,
    session: SessionDep,
    principal: PrincipalDep,
    params: Annotated[PageParams, Depends(page_params)],
) -> Page[EnvironmentRead]:
    principal.require_project(project_id, Role.reporter)
    rows, cursor = make_page(
        await repository.list_environments(session, project_id, params), params
    )
    return Page(items=[EnvironmentRead.of(r) for r in rows], next_cursor=cursor)


@router.get("/environments/{environment_id}", operation_id="get_gitops_environment")
async def get_environment(
    project_id: int, environment_id: int, session: SessionDep, principal: PrincipalDep
) -> EnvironmentRead:
    return EnvironmentRead.of(
        await service.get_environment(session, principal, project_id, environment_id, Role.reporter)
    )


@router.patch("/environments/{environment_id}", operation_id="update_gitops_environment")
async def update_environment(
    project_id: int,
    environment_id: int,
    data: EnvironmentUpdate,
    session: SessionDep,
    principal: PrincipalDep,
) -> EnvironmentRead:
    return EnvironmentRead.of(
        await service.update_environment(session, principal, project_id, environment_id, data)
    )


@router.delete(
    "/environments/{environment_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="delete_gitops_environment",
)
async def delete_environment(
    project_id: int, environment_id: int, session: SessionDep, principal: PrincipalDep
) -> Response:
    """Forget the environment (maintainer); the objects it deployed stay in the cluster."""
    await service.delete_environment(session, principal, project_id, environment_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/environments/{environment_id}/sync",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="sync_gitops_environment",
)
async def sync_environment(
    project_id: int,
    environment_id: int,
    data: SyncRequest,
    session: SessionDep,
    principal: PrincipalDep,
) -> DeploymentRead:
    """Deploy a commit (or the followed ref's head) now (developer). Works on a locked
    environment too: a manual sync is a deliberate choice."""
    deployment = await service.sync(session, principal, project_id, environment_id, data)
    return DeploymentRead.of(deployment)


@router.post(
    "/environments/{environment_id}/drift-check",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="check_gitops_drift",
)
async def check_drift(
    project_id: int, environment_id: int, session: SessionDep, principal: PrincipalDep
) -> EnvironmentRead:
    """Compare the cluster with the last applied manifests now (developer); `sync_status`
    and `drifted_objects` change when the check has run. Checks also run on their own every
    `CLUSTERPORT_GITOPS_DRIFT_INTERVAL_SECONDS` after a successful deployment."""
    return EnvironmentRead.of(
        await service.request_drift_check(session, principal, project_id, environment_id)
    )


@router.post("/environments/{environment_id}/unlock", operation_id="unlock_gitops_environment")
async def unlock_environment(
    project_id: int, environment_id: int, session: SessionDep, principal: PrincipalDep
) -> EnvironmentRead:
    """End a rollback's pin: pushes deploy again (maintainer)."""
    return EnvironmentRead.of(await service.unlock(session, principal, project_id, environment_id))


@router.get("/environments/{environment_id}/deployments", operation_id="list_gitops_deployments")
async def list_deployments(
    project_id: int,
    environment_id: int,
    session: SessionDep,
    principal: PrincipalDep,
    params: Annotated[PageParams, Depends(page_params)],
) -> Page[DeploymentRead]:
    """The environment's deployment history: commit, trigger, who, status, timings."""
    environment = await service.get_environment(
        session, principal, project_id, environment_id, Role.reporter
    )
    rows, cursor = make_page(
        await repository.list_deployments(session, environment.id, params), params
    )
    return Page(items=[DeploymentRead.of(r) for r in rows], next_cursor=cursor)


@router.get("/deployments/{deployment_id}", operation_id="get_gitops_deployment")
async def get_deployment(
    project_id: int, deployment_id: int, session: SessionDep, principal: PrincipalDep
) -> DeploymentRead:
    """A deployment with the state of each of its objects."""
    deployment = await service.get_deployment(
        session, principal, project_id, deployment_id, Role.reporter
    )
    objects = await repository.deployment_objects(session, deployment.id)
    return DeploymentRead.of(deployment, objects)


@router.get(
    "/deployments/{deployment_id}/events",
    operation_id="stream_gitops_deployment",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events."}},
)
async def stream_deployment(
    project_id: int, deployment_id: int, session: SessionDep, principal: PrincipalDep
) -> StreamingResponse:
    """Progress as Server-Sent Events: a `deployment` event (the same body as the GET, with
    objects) whenever something changes, then `end` once the deployment has finished."""
    await service.get_deployment(session, principal, project_id, deployment_id, Role.reporter)
    return StreamingResponse(
        service.deployment_events(project_id, deployment_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post(
    "/deployments/{deployment_id}/confirm-prune",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="confirm_gitops_prune",
)
async def confirm_prune(
    project_id: int, deployment_id: int, session: SessionDep, principal: PrincipalDep
) -> DeploymentRead:
    """Let a guarded prune (a Namespace, a CRD, or a large share of the objects) go ahead."""
    return DeploymentRead.of(
        await service.confirm_prune(session, principal, project_id, deployment_id)
    )


@router.post(
    "/deployments/{deployment_id}/rollback",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="rollback_gitops_deployment",
)
async def rollback(
    project_id: int, deployment_id: int, session: SessionDep, principal: PrincipalDep
) -> DeploymentRead:
    """Re-apply exactly the manifests that deployment applied (checked by digest, no
    re-render) and lock the environment until it is unlocked (maintainer)."""
    return DeploymentRead.of(await service.rollback(session, principal, project_id, deployment_id))


MAX_HOOK_BODY = 5 * 1024 * 1024  # GitHub caps payloads at 25 MB; pushes are far smaller


async def _bounded_body(request: Request) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_HOOK_BODY:
            raise PayloadTooLargeError()
    return bytes(body)


class PayloadTooLargeError(AppError):
    status_code = 413
    code = "payload_too_large"
    message = "The webhook body is larger than 5 MiB."


@hooks_router.post(
    "/{hook_id}",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="receive_webhook",
    responses={
        200: {"description": "A ping, or a delivery id already handled.", "model": HookAccepted},
        401: {"description": "Wrong token or signature."},
    },
)
async def receive_webhook(
    hook_id: str, request: Request, response: Response, session: SessionDep
) -> HookAccepted:
    """Push webhooks: GitLab (`X-Gitlab-Token`), GitHub (`X-Hub-Signature-256`, HMAC-SHA256 of
    the body) or generic (`X-Clusterport-Signature: sha256=<hex HMAC>`, body
    `{"ref": "refs/heads/main", "commit": "<sha>"}`, optional `X-Clusterport-Delivery`).
    Answers within milliseconds; deployments run in workers. Each delivery id counts once."""
    body = await _bounded_body(request)
    code, answer = await service.receive_hook(session, hook_id, request.headers, body)
    response.status_code = code
    return answer
