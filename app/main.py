"""The FastAPI application: routers, error handlers and middleware."""

from __future__ import annotations

from fastapi import FastAPI

from app.addons.router import catalogue_router as addon_catalogue_router
from app.addons.router import router as addons_router
from app.agents.router import instance_router as instance_agents_router
from app.agents.router import router as agents_router
from app.audit.router import router as audit_router
from app.auth.router import router as auth_router
from app.cluster_state.router import router as cluster_state_router
from app.clusters.router import instance_router as instance_clusters_router
from app.clusters.router import router as clusters_router
from app.core.http import RequestContextMiddleware, install_error_handlers
from app.gitops.router import hooks_router
from app.gitops.router import router as gitops_router
from app.job_tokens.router import router as job_tokens_router
from app.namespaces.router import environments_router
from app.namespaces.router import router as namespaces_router
from app.projects.router import router as projects_router
from app.providers.aws.router import router as eks_router

API_DESCRIPTION = """
clusterport connects Kubernetes clusters to a platform: register clusters, give projects
namespaces, provision Amazon EKS, run agents behind firewalls and deploy on push.

Authenticate with `Authorization: Bearer <token>`. Errors have one shape:
`{"error": {"code": "...", "message": "..."}}`; `code` is stable. Lists are paginated with
`limit` and `cursor` (pass the previous page's `next_cursor`) in ascending id order.
"""


def create_app() -> FastAPI:
    import workers  # noqa: F401  (declares the actors that routes enqueue)

    app = FastAPI(
        title="clusterport",
        version="1.0.0",
        description=API_DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
    )
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware)
    for router in (
        projects_router,
        auth_router,
        clusters_router,
        namespaces_router,
        environments_router,
        cluster_state_router,
        audit_router,
        agents_router,
        instance_clusters_router,
        instance_agents_router,
        job_tokens_router,
        eks_router,
        gitops_router,
        hooks_router,
        addons_router,
        addon_catalogue_router,
    ):
        app.include_router(router)
    return app
