"""The install pod's command and objects, log scrubbing, failure codes and release decoding."""

from __future__ import annotations

import base64
import gzip
import json
import socket
import subprocess
from pathlib import Path
from typing import Any

from app.addons import helm
from app.addons.helm import InstallSpec, JobState
from tests.addons.conftest import CHARTS, helm_env


def _spec(**fields: Any) -> InstallSpec:
    base: dict[str, Any] = {
        "addon": "ingress-nginx",
        "operation": "install",
        "operation_key": "install-1",
        "chart_ref": "ingress-nginx",
        "repository": "https://kubernetes.github.io/ingress-nginx",
        "version": "4.11.0",
        "release_namespace": "ingress-nginx",
        "values": {"controller": {"replicaCount": 2}},
        "cluster_role": "cluster-admin",
        "image": "registry.example.com/clusterport:1.0.0",
        "helm_timeout_seconds": 600,
        "job_ttl_seconds": 3600,
        "node_selector": {},
        "pod_labels": {},
    }
    return InstallSpec(**{**base, **fields})


def test_install_command() -> None:
    assert helm.helm_command(_spec()) == [
        "helm",
        "upgrade",
        "--install",
        "ingress-nginx",
        "ingress-nginx",
        "--repo",
        "https://kubernetes.github.io/ingress-nginx",
        "--version",
        "4.11.0",
        "--namespace",
        "ingress-nginx",
        "--create-namespace",
        "--atomic",
        "--wait",
        "--timeout",
        "600s",
        "--history-max",
        "10",
        "--values",
        "/etc/clusterport/addon/values.yaml",
    ]


def test_oci_and_image_charts() -> None:
    oci = helm.helm_command(_spec(chart_ref="oci://r.example.com/charts/x", repository=None))
    assert oci[3:7] == ["ingress-nginx", "oci://r.example.com/charts/x", "--version", "4.11.0"]
    local = helm.helm_command(_spec(chart_ref="/opt/charts/x-1.0.0.tgz", repository=None))
    assert "--version" not in local and "--repo" not in local


def test_uninstall_command_and_job() -> None:
    spec = _spec(operation="uninstall")
    assert helm.helm_command(spec) == [
        "helm",
        "uninstall",
        "ingress-nginx",
        "--namespace",
        "ingress-nginx",
        "--wait",
        "--timeout",
        "600s",
        "--ignore-not-found",
    ]
    job = helm.job(spec)
    assert job["metadata"]["name"] == "uninstall-ingress-nginx"
    assert all(v["name"] != "values" for v in job["spec"]["template"]["spec"]["volumes"])


def test_job_runs_helm_from_the_clusterport_image_locked_down() -> None:
    spec = _spec(node_selector={"pool": "system"})
    job = helm.job(spec)
    assert job["metadata"]["name"] == "install-ingress-nginx"
    assert job["metadata"]["namespace"] == "clusterport-addons"
    assert job["metadata"]["annotations"] == {"clusterport.dev/operation": "install-1"}
    assert job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "install-ingress-nginx"
    assert pod["nodeSelector"] == {"pool": "system"}
    container = pod["containers"][0]
    assert container["image"] == "registry.example.com/clusterport:1.0.0"
    assert container["command"] == helm.helm_command(spec)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    secret = helm.values_secret(spec)
    assert json.loads(base64.b64decode(secret["data"]["values.yaml"])) == spec.values
    binding = helm.cluster_role_binding(spec)
    assert binding["roleRef"]["name"] == "cluster-admin"
    assert binding["subjects"][0] == {
        "kind": "ServiceAccount",
        "name": "install-ingress-nginx",
        "namespace": "clusterport-addons",
    }


def test_scrub_removes_values_tokens_and_keys() -> None:
    values = {
        "auth": {"user": "hunter2-long"},
        "apiTokens": ["tok-12345"],
        "greeting": "hello",
        "note": "a-long-value-of-any-key",
    }
    text = (
        "2026-01-01T00:00:00Z using hunter2-long and tok-12345 and abc, hello\n"
        "a-long-value-of-any-key\n"
        "Authorization: Bearer abcdefghijklmnop\n"
        "token=eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0xx.c2lnbmF0dXJlc2ln\n"
        "apiKey: 'zzz-very-secret'\x1b[31m red\x1b[0m\n"
        "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\n"
    )
    out = helm.scrub(text, values)
    for secret in (
        *("hunter2-long", "tok-12345", "a-long-value", "abcdefghijklmnop"),
        *("eyJhbGci", "zzz-very", "MIIE"),
    ):
        assert secret not in out, secret
    assert "hello" in out  # a short value under a plain key stays readable
    assert "\x1b" not in out


def test_bounded_tail_keeps_whole_last_lines() -> None:
    text = "\n".join(f"line {i}" for i in range(1000))
    tail = helm.bounded_tail(text, 100)
    assert len(tail.encode()) <= 100
    assert tail.endswith("line 999")
    assert all(line.startswith("line ") for line in tail.splitlines())


def test_failure_codes_from_kubernetes_state() -> None:
    assert helm.failure_code(JobState(failed=True, terminated_reason="OOMKilled"), "") == (
        "install_pod_oom_killed"
    )
    assert helm.failure_code(
        JobState(failed=True, failed_reason="DeadlineExceeded", pod_started=True), ""
    ) == ("install_deadline_exceeded")
    assert helm.not_started_code(JobState()) == "install_pod_not_created"
    assert helm.not_started_code(JobState(pod_name="p", unschedulable=True)) == (
        "install_pod_unschedulable"
    )
    assert helm.not_started_code(JobState(pod_name="p", waiting_reason="ImagePullBackOff")) == (
        "installer_image_pull_failed"
    )
    started = JobState(failed=True, pod_started=True, pod_name="p")
    assert helm.failure_code(started, "Error: something new") == "helm_failed"


def _release_secret_data(release: dict[str, Any]) -> str:
    inner = base64.b64encode(gzip.compress(json.dumps(release).encode()))
    return base64.b64encode(inner).decode()


def test_release_decoding_and_drift() -> None:
    release = {
        "info": {"status": "deployed"},
        "chart": {"metadata": {"version": "0.1.0"}},
        "config": {"replicas": 1},
        "manifest": "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\n"
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n",
    }
    decoded = helm.decode_release(_release_secret_data(release))
    assert decoded == release
    assert helm.release_workloads(release, "ns") == [("Deployment", "ns", "d")]
    assert helm.drift_code(decoded, "0.1.0", {"replicas": 1}) is None
    assert helm.drift_code(decoded, "0.2.0", {"replicas": 1}) == "chart_version_drift"
    assert helm.drift_code(decoded, "0.1.0", {"replicas": 2}) == "values_drift"
    assert helm.drift_code(None, "0.1.0", {}) == "release_missing"
    assert helm.decode_release("not base64!") is None
    # A decompression bomb is refused, not inflated.
    bomb = base64.b64encode(base64.b64encode(gzip.compress(b"{" + b" " * (17 << 20) + b"}")))
    assert helm.decode_release(bomb.decode()) is None


def _helm(helm_bin: str, home: Path, *args: str, kubeconfig: Path | None = None) -> str:
    ran = subprocess.run(
        [helm_bin, *args],
        env=helm_env(home, kubeconfig),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode != 0, ran.stdout
    return ran.stdout + ran.stderr


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_codes_from_real_helm_output(helm_bin: str, chart_repo: str, tmp_path: Path) -> None:
    """helm's own failure output, produced for real, maps to our codes."""
    home = tmp_path / "home"
    demo = str(CHARTS / "demo")
    cases = {
        "chart_render_failed": ("template", "x", demo, "--set", "fail=true"),
        "values_rejected_by_chart": ("template", "x", demo, "--set", "replicas=9"),
        "chart_not_found": ("template", "x", "demo", "--repo", chart_repo, "--version", "9.9.9"),
        "chart_repository_unreachable": (
            "template",
            "x",
            "demo",
            "--repo",
            f"http://127.0.0.1:{_closed_port()}",
        ),
    }
    for code, args in cases.items():
        assert helm.helm_failure_code(_helm(helm_bin, home, *args)) == code, code
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "c", "cluster": {"server": f"https://127.0.0.1:{_closed_port()}"}}
                ],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    output = _helm(
        helm_bin,
        home,
        "upgrade",
        "--install",
        "x",
        "demo",
        "--repo",
        chart_repo,
        kubeconfig=kubeconfig,
    )
    assert helm.helm_failure_code(output) == "cluster_unreachable_from_pod"
