"""Benchmark: clusterport's own overhead around 20 add-on installs, beside helm's own runtime.

For each install it measures, against a real kube-apiserver with kube-scheduler and kwok (the
install pod is scheduled and completes), real Postgres and RabbitMQ and a Dramatiq worker:
- PUT -> Job created: from sending the request until the Job is seen in the cluster;
- Job complete -> `installed`: from the Job's Complete condition being seen until the API
  reports the add-on installed;
and, in the same run, helm's own runtime: the install pod's exact command run for real with
helm against the same API server (kwok runs no containers). Observation polls every 10 ms.

Run: `eval "$(scripts/services)"; eval "$(scripts/kube-tools --exports)";
uv run python bench/addons_install.py [--installs 20]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
OBSERVE_EVERY = 0.01


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(name: str, values: list[float]) -> dict[str, Any]:
    return {
        "what": name,
        "n": len(values),
        "p50_ms": round(statistics.median(values) * 1000, 1),
        "p90_ms": round(percentile(values, 0.9) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--installs", type=int, default=20)
    parser.add_argument("--poll-interval", type=float, default=None, help="add-on poll seconds")
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args()

    from cryptography.fernet import Fernet

    from tests.support.services import start_test_services

    services = start_test_services()
    workdir = Path(tempfile.mkdtemp(prefix="addons-bench-"))
    os.environ.update(
        {
            "CLUSTERPORT_DATABASE_URL": services.database_url,
            "CLUSTERPORT_BROKER_URL": services.broker_url,
            "CLUSTERPORT_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "CLUSTERPORT_LOG_LEVEL": "WARNING",
            "CLUSTERPORT_ALLOW_LOCAL_NETWORK": "true",
            "CLUSTERPORT_ADDONS_CATALOGUE_FILE": str(workdir / "catalogue.yaml"),
            "CLUSTERPORT_ADDONS_HEALTH_INTERVAL_SECONDS": "86400",
        }
    )
    if args.poll_interval is not None:
        os.environ["CLUSTERPORT_ADDONS_POLL_INTERVAL_SECONDS"] = str(args.poll_interval)
    state = workdir / "kube"
    up = subprocess.run(
        [str(REPO / "scripts" / "kube-up"), str(state)], capture_output=True, text=True
    )
    if up.returncode != 0:
        print(up.stderr, file=sys.stderr)
        return 1
    try:
        result = asyncio.run(run(args, workdir, state))
        print(json.dumps(result, indent=2))
        if args.output:
            args.output.write_text(json.dumps(result, indent=2))
        return 0
    finally:
        subprocess.run([str(REPO / "scripts" / "kube-down"), str(state)], capture_output=True)
        from app.core.db import get_engine

        get_engine().dispose()
        services.close()
        shutil.rmtree(workdir, ignore_errors=True)


async def run(args: argparse.Namespace, workdir: Path, state: Path) -> dict[str, Any]:
    import dramatiq
    import httpx
    import yaml

    import workers
    from app.cli import migrate_database
    from app.main import create_app
    from tests.addons.conftest import DEMO_SCHEMA, run_install_pod_command
    from tests.conftest import Api, create_admin_token
    from tests.support.kubeapi import KubeCluster, tools_bin_dir

    kube = KubeCluster(
        url=(state / "server").read_text().strip(),
        ca_pem=(state / "ca.crt").read_text(),
        token=(state / "token").read_text().strip(),
        kubeconfig=state / "kubeconfig",
        kubectl_path=str(tools_bin_dir() / "kubectl"),
        source="local",
    )
    helm = str(tools_bin_dir() / "helm")
    repo_url, stop_repo = serve_chart_repo(helm, workdir)
    names = [f"bench-{i}" for i in range(args.installs)]
    entries = [
        {
            "name": name,
            "title": name,
            "chart": "demo",
            "version": "0.1.0",
            "repository": repo_url,
            "namespace": name,
            "values_schema": DEMO_SCHEMA,
        }
        for name in names
    ]
    (workdir / "catalogue.yaml").write_text(yaml.safe_dump(entries))
    migrate_database()
    worker = dramatiq.Worker(workers.broker, worker_threads=4)
    worker.start()
    to_job: list[float] = []
    to_installed: list[float] = []
    helm_runtime: list[float] = []
    try:
        transport = httpx.ASGITransport(app=create_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            api = Api(client, create_admin_token())
            project = await api.create_project("bench")
            created = await api.post(
                f"/api/v1/projects/{project['id']}/clusters",
                {
                    "name": "bench",
                    "environment_scope": "*",
                    "kubernetes": {"api_url": kube.url, "ca_pem": kube.ca_pem, "token": kube.token},
                },
            )
            cluster_id = created.json()["id"]
            base = f"/api/v1/projects/{project['id']}/clusters/{cluster_id}"
            for _ in range(600):
                if (await api.get(base)).json()["status"] != "connecting":
                    break
                await asyncio.sleep(0.1)
            kube_http = httpx.AsyncClient(
                base_url=kube.url,
                verify=str(state / "ca.crt"),
                headers={"Authorization": f"Bearer {kube.token}"},
            )
            for name in names:
                jobs = f"/apis/batch/v1/namespaces/clusterport-addons/jobs/install-{name}"
                seen: dict[str, float] = {}
                started = time.perf_counter()
                response = await api.request("PUT", f"{base}/addons/{name}", json={})
                assert response.status_code == 202, response.text
                deadline = time.monotonic() + 300
                while "installed" not in seen:
                    assert time.monotonic() < deadline, f"{name} did not install: {seen}"
                    job = await kube_http.get(jobs)
                    now = time.perf_counter()
                    if job.status_code == 200:
                        seen.setdefault("job", now)
                        if finished(job.json()) == "Complete":
                            seen.setdefault("complete", now)
                    addon = (await api.get(f"{base}/addons/{name}")).json()
                    if addon["status"] == "installed":
                        seen.setdefault("installed", time.perf_counter())
                    assert addon["status"] != "errored", addon
                    await asyncio.sleep(OBSERVE_EVERY)
                # Seen installed in the same poll as complete: the worker was faster than us.
                seen.setdefault("complete", seen["installed"])
                to_job.append(seen["job"] - started)
                to_installed.append(seen["installed"] - seen["complete"])
                t0 = time.perf_counter()
                try:
                    ran = run_install_pod_command(kube, helm, f"install-{name}", workdir / name)
                except subprocess.TimeoutExpired:
                    print(kube.kubectl("get", "pods,deploy,rs", "-A", "-o", "wide").stdout)
                    raise
                helm_runtime.append(time.perf_counter() - t0)
                assert ran.returncode == 0, ran.stderr
                print(
                    f"{name}: job {to_job[-1] * 1000:.0f} ms, installed "
                    f"{to_installed[-1] * 1000:.0f} ms after completion, helm "
                    f"{helm_runtime[-1] * 1000:.0f} ms",
                    file=sys.stderr,
                )
            await kube_http.aclose()
    finally:
        worker.stop()
        stop_repo()
    overhead = [a + b for a, b in zip(to_job, to_installed, strict=True)]
    return {
        "installs": args.installs,
        "poll_interval_seconds": float(
            os.environ.get("CLUSTERPORT_ADDONS_POLL_INTERVAL_SECONDS", "1.0")
        ),
        "results": [
            summary("PUT -> Job created", to_job),
            summary("Job complete -> installed", to_installed),
            summary("clusterport overhead (sum of both)", overhead),
            summary("helm upgrade --install runtime (baseline)", helm_runtime),
        ],
        "overhead_p50_over_helm_p50": round(
            statistics.median(overhead) / statistics.median(helm_runtime), 3
        ),
    }


def finished(job: dict[str, Any]) -> str | None:
    """The Job's finished condition (Complete or Failed), or None while it runs."""
    for condition in job.get("status", {}).get("conditions") or []:
        if condition["type"] in ("Complete", "Failed") and condition["status"] == "True":
            return str(condition["type"])
    return None


def serve_chart_repo(helm: str, workdir: Path) -> tuple[str, Any]:
    import threading
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from tests.addons.conftest import CHARTS, helm_env

    root = workdir / "repo"
    root.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
    url = f"http://127.0.0.1:{server.server_address[1]}"
    env = helm_env(workdir / "helm-home")
    subprocess.run([helm, "package", str(CHARTS / "demo"), "-d", str(root)], env=env, check=True)
    subprocess.run([helm, "repo", "index", str(root), "--url", url], env=env, check=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return url, stop


if __name__ == "__main__":
    sys.exit(main())
