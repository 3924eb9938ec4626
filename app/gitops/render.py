"""Rendering a checked-out commit into objects: plain YAML, Kustomize or a Helm chart.

Kustomize runs as `kubectl kustomize` (or a standalone `kustomize build`) and Helm as
`helm template`, the real binaries (installed by scripts/kube-tools and in the image), with an
empty environment and a time limit.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.gitops.errors import SourceError
from app.gitops.models import RenderMode
from app.gitops.settings import get_gitops_settings
from app.gitops_engine.manifests import ManifestError, parse_documents

_MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class RenderSpec:
    mode: RenderMode
    paths: list[str]
    namespace: str
    release: str
    helm_values_file: str | None = None

    @property
    def checkout_paths(self) -> list[str]:
        """What to check out: the paths, and the values file wherever it lives."""
        extra = [self.helm_values_file] if self.helm_values_file else []
        return list(dict.fromkeys([*self.paths, *extra]))


def _plain_files(root: Path, path: str) -> list[tuple[str, str]]:
    target = root / path
    if target.is_file():
        candidates = [target]
    elif target.is_dir():
        candidates = sorted(
            p for p in target.rglob("*") if p.is_file() and p.suffix in _MANIFEST_SUFFIXES
        )
    else:
        raise SourceError("path_not_found", f"{path}: no such file or directory in the commit")
    files = []
    for candidate in candidates:
        relative = str(candidate.relative_to(root))
        try:
            files.append((relative, candidate.read_text(encoding="utf-8")))
        except UnicodeDecodeError:
            raise SourceError("not_utf8", f"{relative}: the file is not UTF-8 text") from None
    return files


def _run(args: list[str], what: str, cwd: Path) -> str:
    settings = get_gitops_settings()
    with tempfile.TemporaryDirectory(prefix="clusterport-render-") as home:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": home,
            "XDG_CACHE_HOME": home,
            "XDG_CONFIG_HOME": home,
            "XDG_DATA_HOME": home,
            "HELM_CACHE_HOME": home,
            "HELM_CONFIG_HOME": home,
            "HELM_DATA_HOME": home,
            "KUBECONFIG": os.devnull,
        }
        try:
            proc = subprocess.run(  # noqa: S603 - fixed binaries, argument list
                args,
                cwd=cwd,
                env=env,
                capture_output=True,
                timeout=settings.command_timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise SourceError("render_timeout", f"{what} did not finish in time") from None
        except FileNotFoundError:
            raise SourceError("renderer_missing", f"{args[0]} is not installed") from None
    if proc.returncode != 0:
        # The renderer's first line names the file and problem in the user's repository.
        lines = proc.stderr.decode(errors="replace").strip().splitlines() or ["failed"]
        detail = lines[0].removeprefix("Error: ").replace(str(cwd) + "/", "")[:300]
        raise SourceError("render_failed", f"{what}: {detail}")
    if len(proc.stdout) > settings.max_total_bytes:
        raise SourceError("render_too_large", f"{what} rendered more than the total size limit")
    return proc.stdout.decode(errors="replace")


def render(root: Path, spec: RenderSpec) -> list[dict[str, Any]]:
    """Every object the paths render to, in order. Raises `SourceError` or the engine's
    `ManifestError` (malformed YAML with file and line)."""
    settings = get_gitops_settings()
    files: list[tuple[str, str]] = []
    for path in spec.paths:
        if spec.mode is RenderMode.plain:
            files += _plain_files(root, path)
        elif spec.mode is RenderMode.kustomize:
            command = (
                [settings.kustomize, "build", path]
                if settings.kustomize
                else [settings.kubectl, "kustomize", path]
            )
            files.append((f"{path} (kustomize)", _run(command, "kustomize", root)))
        else:
            args = [settings.helm, "template", spec.release, path, "--namespace", spec.namespace]
            if spec.helm_values_file:
                args += ["--values", spec.helm_values_file]
            files.append((f"{path} (helm)", _run(args, "helm template", root)))
    try:
        return parse_documents(files)
    except ManifestError as exc:
        raise SourceError(exc.code, exc.message) from None
