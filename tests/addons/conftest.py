"""Fixtures for add-on tests: helm from the project's tools, a chart repository on loopback, a
catalogue of test entries, and running an install pod's exact command for real."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.kubeapi import HOW_TO_PROVIDE, KubeCluster, tools_bin_dir

CHARTS = Path(__file__).parent / "charts"
DEMO_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "replicas": {"type": "integer", "minimum": 0, "maximum": 3},
        "greeting": {"type": "string", "maxLength": 40},
        "password": {"type": "string"},
        "fail": {"type": "boolean"},
    },
}


@pytest.fixture(scope="session")
def helm_bin() -> str:
    path = tools_bin_dir() / "helm"
    if not path.is_file():
        pytest.fail(f"helm not found in {path}. {HOW_TO_PROVIDE}", pytrace=False)
    return str(path)


def helm_env(home: Path, kubeconfig: Path | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    env.pop("KUBECONFIG", None)
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    return env


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="session")
def chart_repo(helm_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An HTTP chart repository on loopback with the demo chart at 0.1.0 and 0.2.0."""
    root = tmp_path_factory.mktemp("charts")
    home = tmp_path_factory.mktemp("helm-home")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    url = f"http://127.0.0.1:{server.server_address[1]}"
    for version in ("0.1.0", "0.2.0"):
        subprocess.run(
            [helm_bin, "package", str(CHARTS / "demo"), "--version", version, "-d", str(root)],
            env=helm_env(home),
            check=True,
            capture_output=True,
        )
    subprocess.run(
        [helm_bin, "repo", "index", str(root), "--url", url],
        env=helm_env(home),
        check=True,
        capture_output=True,
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield url
    server.shutdown()
    server.server_close()


@dataclass
class DemoCatalogue:
    """Writes catalogue entries (unique names per test) into the operator's catalogue file."""

    path: Path
    repository: str
    entries: list[dict[str, Any]]

    def add(self, **fields: Any) -> str:
        from app.addons.catalogue import reset_catalogue

        name: str = fields.pop("name", f"demo-{uuid.uuid4().hex[:8]}")
        entry = {
            "name": name,
            "title": "Demo",
            "chart": "demo",
            "version": "0.1.0",
            "repository": self.repository,
            "namespace": name,
            "values_schema": DEMO_SCHEMA,
            "default_values": {"greeting": "hello"},
            **fields,
        }
        self.entries.append(entry)
        self.path.write_text(yaml.safe_dump(self.entries))
        reset_catalogue()
        return name


@pytest.fixture
def addon_settings() -> Iterator[Any]:
    """The add-on settings, fast-paced for tests; restored afterwards."""
    from app.addons.settings import get_addon_settings

    settings = get_addon_settings()
    saved = settings.model_dump()
    settings.poll_interval_seconds = 0.2
    settings.retry_delay_seconds = 0.2
    settings.health_interval_seconds = 3600.0
    yield settings
    for key, value in saved.items():
        setattr(settings, key, value)


@pytest.fixture
def test_catalogue(addon_settings: Any, chart_repo: str, tmp_path: Path) -> Iterator[DemoCatalogue]:
    from app.addons.catalogue import reset_catalogue

    path = tmp_path / "catalogue.yaml"
    path.write_text("[]")
    addon_settings.catalogue_file = path
    reset_catalogue()
    yield DemoCatalogue(path, chart_repo, [])
    addon_settings.catalogue_file = None
    reset_catalogue()


def sa_kubeconfig(kube_cluster: KubeCluster, service_account: str, path: Path) -> Path:
    """A kubeconfig for a service account of `clusterport-addons` (a fresh bound token)."""
    token = kube_cluster.kubectl(
        "create", "token", service_account, "-n", "clusterport-addons"
    ).stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "c",
                "cluster": {
                    "server": kube_cluster.url,
                    "certificate-authority-data": base64.b64encode(
                        kube_cluster.ca_pem.encode()
                    ).decode(),
                },
            }
        ],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }
    path.touch(mode=0o600)
    path.write_text(json.dumps(config))
    return path


def run_install_pod_command(
    kube_cluster: KubeCluster, helm_bin: str, job_name: str, workdir: Path
) -> subprocess.CompletedProcess[str]:
    """Run, for real, the command of the Job's container, as the Job's service account, with
    the values the Job mounts from its Secret: what the pod would do if kwok ran containers.
    Only the values file's directory and the binary's path differ."""
    from app.addons.helm import NAMESPACE, VALUES_DIR

    job = kube_cluster.kubectl_json("get", "job", job_name, "-n", NAMESPACE)
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    command: list[str] = [*container["command"], *container.get("args", [])]
    values_dir = workdir / "values"
    values_dir.mkdir(parents=True, exist_ok=True)
    for volume in pod["volumes"]:
        if "secret" in volume:
            secret = kube_cluster.kubectl_json(
                "get", "secret", volume["secret"]["secretName"], "-n", NAMESPACE
            )
            for key, data in secret["data"].items():
                (values_dir / key).write_bytes(base64.b64decode(data))
    assert command[0] == "helm"
    argv = [helm_bin] + [arg.replace(VALUES_DIR, str(values_dir)) for arg in command[1:]]
    kubeconfig = sa_kubeconfig(kube_cluster, pod["serviceAccountName"], workdir / "kubeconfig")
    home = workdir / "helm-home"
    shutil.rmtree(home, ignore_errors=True)
    return subprocess.run(
        argv,
        env=helm_env(home, kubeconfig),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def sse_events(body: str) -> list[dict[str, str]]:
    """Server-Sent Events as dicts of their fields (`data` lines joined with newlines)."""
    events = []
    for block in body.strip().split("\n\n"):
        event: dict[str, str] = {}
        for line in block.splitlines():
            key, _, value = line.partition(": ")
            event[key] = f"{event[key]}\n{value}" if key in event else value
        events.append(event)
    return events
