"""`clusterport clusters add --context CONTEXT`: register a cluster you reach with kubectl."""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from app.core.cli import CLIError, api_base_url, api_client, api_error, api_token, unreachable

_NOT_DNS = re.compile(r"[^a-z0-9-]+")
_HINTS = {
    "unsafe_url": " A cluster on this machine or a private network needs the server started "
    "with CLUSTERPORT_ALLOW_LOCAL_NETWORK=true.",
    "cluster_name_taken": " Pass another --name.",
    "environment_scope_taken": " Pass another --environment-scope.",
}


def add_parser(clusters: Any) -> None:
    """Add `add` to the `clusters` subcommand parsers."""
    add = clusters.add_parser(
        "add",
        help="Register the cluster of a kubeconfig context (creates clusterport's account).",
        description=(
            "With your kubeconfig credentials, create a ServiceAccount for clusterport in the "
            "cluster, bind it to the ClusterRole clusterport-manager (every right; managed "
            "clusters) or view (read-only; --unmanaged), and register the cluster through the "
            "API with its URL, CA and the account's token. CLUSTERPORT_TOKEN is a maintainer "
            "token of the project; CLUSTERPORT_API_URL the API (default the local one)."
        ),
    )
    add.add_argument("--project", type=int, required=True, help="project id")
    add.add_argument("--context", help="kubeconfig context (default: the current context)")
    add.add_argument("--kubeconfig", type=Path, help="kubeconfig file (default: as kubectl)")
    add.add_argument("--name", help="cluster name (default: the context name as a DNS label)")
    add.add_argument("--environment-scope", default="*", help="environment scope (default: *)")
    add.add_argument(
        "--unmanaged",
        action="store_true",
        help="clusterport creates no namespaces here; its account may only read (ClusterRole view)",
    )
    add.add_argument("--service-account", default="clusterport", help="(default: %(default)s)")
    add.add_argument("--namespace", default="kube-system", help="of the ServiceAccount")
    add.add_argument(
        "--wait", action="store_true", help="wait for the connectivity check and show its result"
    )
    add.set_defaults(func=cmd_clusters_add)


def cmd_clusters_add(args: argparse.Namespace) -> int:
    from app.kube import KubeError
    from app.kube.bootstrap import KubeconfigError, client_from_kubeconfig, grant_access

    token = api_token()
    base_url = api_base_url()
    try:
        kube, configuration, context = client_from_kubeconfig(args.kubeconfig, args.context)
        with kube:
            access = grant_access(
                kube,
                configuration,
                managed=not args.unmanaged,
                namespace=args.namespace,
                name=args.service_account,
            )
    except KubeconfigError as exc:
        raise CLIError(f"kubeconfig: {exc}") from None
    except KubeError as exc:
        hint = {
            "forbidden": " Your kubeconfig user may not create ServiceAccounts, ClusterRoles and "
            "ClusterRoleBindings: use a cluster-admin context.",
            "unauthorized": " Your kubeconfig credentials were refused: check them with kubectl.",
        }.get(exc.code, " Check the context with `kubectl --context CONTEXT get ns`.")
        raise CLIError(f"setting up clusterport's account failed: {exc.code}.{hint}") from None
    name = args.name or _dns_label(context)
    body = {
        "name": name,
        "environment_scope": args.environment_scope,
        "managed": not args.unmanaged,
        "kubernetes": {"api_url": access.api_url, "token": access.token, "ca_pem": access.ca_pem},
    }
    try:
        with api_client(token, base_url) as api:
            response = api.post(f"/api/v1/projects/{args.project}/clusters", json=body)
            if response.status_code != 201:
                error = api_error(response, "registering the cluster")
                code = _code(response)
                raise CLIError(f"{error}{_HINTS.get(code, '')}")
            cluster = response.json()
            print(
                f"registered cluster {cluster['id']} ({name}, {access.api_url}) in project "
                f"{args.project}: account {access.service_account}, ClusterRole "
                f"{access.cluster_role}; status {cluster['status']}",
                file=sys.stderr,
            )
            print(cluster["id"])
            if args.wait:
                return _wait_checked(api, args.project, cluster["id"])
    except httpx.HTTPError as exc:
        raise unreachable(exc, base_url) from None
    return 0


def _wait_checked(api: httpx.Client, project: int, cluster_id: int, limit: float = 120) -> int:
    deadline = time.monotonic() + limit
    while True:
        response = api.get(f"/api/v1/projects/{project}/clusters/{cluster_id}")
        if response.status_code != 200:
            raise api_error(response, "reading the cluster")
        cluster = response.json()
        if cluster["status"] != "connecting":
            error = cluster.get("error")
            detail = f" ({error['code']}: {error['message']})" if error else ""
            print(f"cluster {cluster_id} is {cluster['status']}{detail}", file=sys.stderr)
            return 0 if cluster["status"] == "connected" else 1
        if time.monotonic() > deadline:
            raise CLIError(f"cluster {cluster_id} is still being checked; is a worker running?")
        time.sleep(0.5)


def _code(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""


def _dns_label(value: str) -> str:
    return _NOT_DNS.sub("-", value.lower()).strip("-")[:63].strip("-") or "cluster"
