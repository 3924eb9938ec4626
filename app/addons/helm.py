"""What an install pod runs and how its outcome is read: pure functions, no I/O.

The Job's objects and helm command line are built here; so are the scrubbed log tail, the
failure codes read from helm's output and the pod's state, and the decoding of the release
record helm keeps in a Secret (for the drift check).
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import re
import zlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import yaml

NAMESPACE = "clusterport-addons"
VALUES_DIR = "/etc/clusterport/addon"
VALUES_FILE = f"{VALUES_DIR}/values.yaml"
MANAGED_BY = {"app.kubernetes.io/managed-by": "clusterport"}
ADDON_LABEL = "clusterport.dev/addon"
OPERATION_ANNOTATION = "clusterport.dev/operation"
# Installer pods run as the image's user, with nothing writable but /tmp.
RUN_AS = 10001
POD_TMP = "/tmp"  # noqa: S108 (an emptyDir of the install pod's own)
JOB_DEADLINE_MARGIN_SECONDS = 120


@dataclass(frozen=True)
class InstallSpec:
    """One operation on one add-on, as the installer needs it."""

    addon: str  # also the Helm release name
    operation: str  # install | upgrade | uninstall
    operation_key: str  # tells this operation's Job from an earlier one of the same name
    chart_ref: str
    repository: str | None
    version: str
    release_namespace: str
    values: dict[str, Any]
    cluster_role: str
    image: str
    helm_timeout_seconds: int
    job_ttl_seconds: int
    node_selector: dict[str, str]
    pod_labels: dict[str, str]

    @property
    def uninstall(self) -> bool:
        return self.operation == "uninstall"

    @property
    def job_name(self) -> str:
        return f"{'uninstall' if self.uninstall else 'install'}-{self.addon}"

    @property
    def service_account(self) -> str:
        return f"install-{self.addon}"

    @property
    def binding_name(self) -> str:
        return f"clusterport-addons:install-{self.addon}"

    @property
    def values_secret(self) -> str:
        return f"values-{self.addon}"

    @property
    def labels(self) -> dict[str, str]:
        return {**MANAGED_BY, ADDON_LABEL: self.addon}


def operation_key(operation: str, started_at: datetime) -> str:
    return f"{operation}-{int(started_at.timestamp() * 1000)}"


def helm_command(spec: InstallSpec) -> list[str]:
    """The install pod's command line (the test suite runs exactly this against a real API)."""
    timeout = f"{spec.helm_timeout_seconds}s"
    if spec.uninstall:
        return [
            "helm",
            "uninstall",
            spec.addon,
            "--namespace",
            spec.release_namespace,
            "--wait",
            "--timeout",
            timeout,
            "--ignore-not-found",
        ]
    command = ["helm", "upgrade", "--install", spec.addon, spec.chart_ref]
    if spec.repository and not spec.repository.startswith("oci://"):
        command += ["--repo", spec.repository]
    if not spec.chart_ref.startswith("/"):
        command += ["--version", spec.version]
    return [
        *command,
        "--namespace",
        spec.release_namespace,
        "--create-namespace",
        "--atomic",
        "--wait",
        "--timeout",
        timeout,
        "--history-max",
        "10",
        "--values",
        VALUES_FILE,
    ]


def service_account(spec: InstallSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": spec.service_account, "namespace": NAMESPACE, "labels": spec.labels},
    }


def cluster_role_binding(spec: InstallSpec) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": spec.binding_name, "labels": spec.labels},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": spec.cluster_role,
        },
        "subjects": [
            {"kind": "ServiceAccount", "name": spec.service_account, "namespace": NAMESPACE}
        ],
    }


def values_secret(spec: InstallSpec) -> dict[str, Any]:
    # JSON is YAML: helm reads it as a values file.
    document = json.dumps(spec.values, sort_keys=True)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": spec.values_secret, "namespace": NAMESPACE, "labels": spec.labels},
        "data": {"values.yaml": base64.b64encode(document.encode()).decode()},
    }


def job(spec: InstallSpec) -> dict[str, Any]:
    """The Job. Kubernetes names its pod `<job name>-<5 characters>`; the pod carries the
    `job-name` and `clusterport.dev/addon` labels."""
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": POD_TMP}]
    if not spec.uninstall:
        volumes.append({"name": "values", "secret": {"secretName": spec.values_secret}})
        mounts.append({"name": "values", "mountPath": VALUES_DIR, "readOnly": True})
    pod_spec: dict[str, Any] = {
        "serviceAccountName": spec.service_account,
        "restartPolicy": "Never",
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "helm",
                "image": spec.image,
                "command": helm_command(spec),
                "env": [
                    {"name": "HELM_CACHE_HOME", "value": f"{POD_TMP}/helm/cache"},
                    {"name": "HELM_CONFIG_HOME", "value": f"{POD_TMP}/helm/config"},
                    {"name": "HELM_DATA_HOME", "value": f"{POD_TMP}/helm/data"},
                ],
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
                "resources": {
                    "requests": {"cpu": "50m", "memory": "128Mi"},
                    "limits": {"memory": "512Mi"},
                },
                "volumeMounts": mounts,
            }
        ],
        "volumes": volumes,
    }
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": spec.job_name,
            "namespace": NAMESPACE,
            "labels": spec.labels,
            "annotations": {OPERATION_ANNOTATION: spec.operation_key},
        },
        "spec": {
            # helm --atomic already rolls back: a second attempt would only repeat it.
            "backoffLimit": 0,
            "activeDeadlineSeconds": spec.helm_timeout_seconds + JOB_DEADLINE_MARGIN_SECONDS,
            "ttlSecondsAfterFinished": spec.job_ttl_seconds,
            "template": {
                "metadata": {"labels": {**spec.pod_labels, **spec.labels}},
                "spec": pod_spec,
            },
        },
    }


# --- the Job's outcome -----------------------------------------------------------------------


@dataclass(frozen=True)
class JobState:
    """What the installer read of the Job and its pod."""

    succeeded: bool = False
    failed: bool = False
    failed_reason: str | None = None  # the Job's Failed condition reason
    pod_name: str | None = None
    pod_started: bool = False  # a container ran (or runs)
    unschedulable: bool = False
    waiting_reason: str | None = None
    terminated_reason: str | None = None


_IMAGE_PULL = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}


def not_started_code(state: JobState) -> str:
    """Why a pod that never ran did not: the code stored when the start timeout passes."""
    if state.pod_name is None:
        return "install_pod_not_created"
    if state.unschedulable:
        return "install_pod_unschedulable"
    if state.waiting_reason in _IMAGE_PULL:
        return "installer_image_pull_failed"
    if state.waiting_reason == "CreateContainerConfigError":
        return "install_pod_config_error"
    return "install_pod_not_started"


# helm's last `Error:` line, matched in order; the first match names the failure.
_HELM_FAILURES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (code, re.compile(pattern, re.IGNORECASE))
    for code, pattern in (
        ("helm_operation_in_progress", r"another operation \(install/upgrade/rollback\)"),
        ("cluster_unreachable_from_pod", r"kubernetes cluster unreachable"),
        ("release_name_in_use", r"cannot re-use a name that is still in use"),
        ("values_rejected_by_chart", r"values don't meet the specifications of the schema"),
        ("chart_not_found", r"chart \".*\" (version \".*\" )?not found|no chart (name|version)"),
        (
            "chart_repository_unreachable",
            r"is not a valid chart repository or cannot be reached|failed to fetch|"
            r"failed to do request|connection refused|no such host|i/o timeout",
        ),
        ("resource_conflict", r"rendered manifests contain a resource that already exists"),
        ("forbidden", r"\bforbidden\b"),
        ("helm_wait_timeout", r"timed out waiting for the condition|context deadline exceeded"),
        ("chart_render_failed", r"template: |parse error|execution error"),
        ("manifest_invalid", r"unable to build kubernetes objects|error validating|is invalid"),
        ("release_not_found", r"release: not found|release not loaded"),
    )
)


def helm_failure_code(log: str) -> str:
    """Our code for a failed helm run, from the `Error:` lines of its output."""
    errors = [line for line in log.splitlines() if "Error:" in line or "error:" in line]
    for line in reversed(errors or log.splitlines()[-5:]):
        for code, pattern in _HELM_FAILURES:
            if pattern.search(line):
                return code
    return "helm_failed"


def failure_code(state: JobState, log: str) -> str:
    """Our code for a failed Job: Kubernetes' reason when it has one, else helm's output."""
    if state.terminated_reason == "OOMKilled":
        return "install_pod_oom_killed"
    if state.failed_reason == "DeadlineExceeded":
        return "install_deadline_exceeded"
    if not state.pod_started:
        return not_started_code(state)
    return helm_failure_code(log)


# --- the log tail ------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]|\x1b\[[0-9;?]*[A-Za-z]")
_SECRET_PATTERNS = (
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),  # JWTs
    re.compile(r"\bcp[tap]_[A-Za-z0-9_-]{10,}"),  # clusterport tokens
    re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"(?i)(password|passwd|secret|token|api[_-]?key)(\"?\s*[:=]\s*\"?)[^\s\",}]+"),
)
REDACTED = "[redacted]"
MIN_SECRET_LENGTH = 4


_SECRET_KEY = re.compile(r"(?i)pass|secret|token|key|cred|auth|cert|private|dsn|session|cookie")
# A value this long could be a credential whatever its key is called.
LONG_VALUE = 16


def _secret_strings(values: Any, secret_key: bool = False) -> set[str]:
    """Strings of the values to hide: those under secret-sounding keys, and long ones."""
    found: set[str] = set()
    if isinstance(values, dict):
        for key, value in values.items():
            found |= _secret_strings(value, secret_key or bool(_SECRET_KEY.search(str(key))))
    elif isinstance(values, list):
        for value in values:
            found |= _secret_strings(value, secret_key)
    elif isinstance(values, str) and len(values) >= MIN_SECRET_LENGTH:
        if secret_key or len(values) >= LONG_VALUE:
            found.add(values)
    return found


def scrub(text: str, values: dict[str, Any]) -> str:
    """The text with control characters removed and secrets replaced: the values' strings under
    secret-sounding keys and long ones, private keys, tokens and `password=...`-like pairs."""
    text = _CONTROL.sub("", text)
    for secret in sorted(_secret_strings(values), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    for pattern in _SECRET_PATTERNS:
        if pattern.groups >= 2:
            text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
        elif pattern.groups == 1:
            text = pattern.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
        else:
            text = pattern.sub(REDACTED, text)
    return text


def bounded_tail(text: str, limit_bytes: int) -> str:
    """The last whole lines of `text` that fit in `limit_bytes` (UTF-8)."""
    if len(text.encode()) <= limit_bytes:
        return text
    kept: list[str] = []
    size = 0
    for line in reversed(text.splitlines()):
        size += len(line.encode()) + 1
        if size > limit_bytes:
            break
        kept.append(line)
    return "\n".join(reversed(kept))


def tail_lines(tail: str | None) -> list[tuple[str, str]]:
    """(timestamp, text) of each stored line; Kubernetes prefixes lines with RFC 3339 times."""
    lines = []
    for line in (tail or "").splitlines():
        stamp, _, rest = line.partition(" ")
        lines.append((stamp, rest))
    return lines


# --- the release helm keeps in the cluster -----------------------------------------------------

MAX_RELEASE_BYTES = 16 * 1024 * 1024


def decode_release(data: str) -> dict[str, Any] | None:
    """Helm's release record from its Secret's `release` field (base64 of base64 of gzip'd
    JSON); None when it is not one. Decompression is bounded."""
    try:
        raw = base64.b64decode(base64.b64decode(data, validate=True), validate=True)
        if raw[:2] == b"\x1f\x8b":
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            raw = inflater.decompress(raw, MAX_RELEASE_BYTES)
            if inflater.unconsumed_tail:
                return None
        release = json.loads(raw)
    except (binascii.Error, ValueError, zlib.error, gzip.BadGzipFile):
        return None
    return release if isinstance(release, dict) else None


WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")


def release_workloads(release: dict[str, Any], namespace: str) -> list[tuple[str, str, str]]:
    """(kind, namespace, name) of every Deployment, StatefulSet and DaemonSet in the release."""
    found = []
    try:
        documents = list(yaml.safe_load_all(str(release.get("manifest") or "")))
    except yaml.YAMLError:
        return []
    for doc in documents:
        if not isinstance(doc, dict) or doc.get("kind") not in WORKLOAD_KINDS:
            continue
        meta = doc.get("metadata") or {}
        if isinstance(meta, dict) and isinstance(meta.get("name"), str):
            found.append((str(doc["kind"]), str(meta.get("namespace") or namespace), meta["name"]))
    return found


def drift_code(release: dict[str, Any] | None, version: str, values: dict[str, Any]) -> str | None:
    """What differs between the release in the cluster and what was asked, as a code."""
    if release is None:
        return "release_missing"
    info = release.get("info") or {}
    if not isinstance(info, dict) or info.get("status") != "deployed":
        return "release_not_deployed"
    chart = release.get("chart") or {}
    metadata = chart.get("metadata") if isinstance(chart, dict) else None
    if not isinstance(metadata, dict) or str(metadata.get("version")) != version:
        return "chart_version_drift"
    if (release.get("config") or {}) != values:
        return "values_drift"
    return None
