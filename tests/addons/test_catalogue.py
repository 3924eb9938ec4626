"""The catalogue: built-in pinned charts, the operator's file and mirror, values validation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.addons.catalogue import (
    CatalogueError,
    builtin_entries,
    catalogue,
    merged_values,
    reset_catalogue,
    validate_values,
)


@pytest.fixture
def settings(addon_settings: Any) -> Iterator[Any]:
    reset_catalogue()
    yield addon_settings
    addon_settings.catalogue_file = None
    addon_settings.chart_repository = None
    reset_catalogue()


def test_builtins_pin_a_version_and_a_schema(settings: Any) -> None:
    entries = catalogue()
    assert {"ingress-nginx", "cert-manager", "metrics-server"} <= set(entries)
    ingress = entries["ingress-nginx"]
    assert ingress.version == "4.11.0"
    assert ingress.repository == "https://kubernetes.github.io/ingress-nginx"
    assert validate_values(ingress, {"controller": {"replicaCount": 2}}) == []
    problems = validate_values(ingress, {"controller": {"replicaCount": "two"}, "typo": 1})
    assert {p["field"] for p in problems} == {"controller.replicaCount", "(values)"}
    assert entries["cert-manager"].default_values == {"crds": {"enabled": True}}


def test_errors_never_repeat_the_value(settings: Any) -> None:
    entry = catalogue()["metrics-server"]
    secret = "s3cr3t-value-that-must-not-echo"
    problems = validate_values(entry, {"replicas": secret, "args": [secret, 3]})
    assert problems
    assert secret not in repr(problems)
    assert {"field": "replicas", "message": "must be of type integer"} in problems


def test_operator_file_adds_and_replaces_entries(settings: Any, tmp_path: Path) -> None:
    path = tmp_path / "catalogue.yaml"
    path.write_text(
        """
- name: metrics-server
  title: Metrics Server (our pin)
  chart: metrics-server
  version: 3.12.1
  repository: https://charts.example.com/
  namespace: monitoring
- name: podinfo
  title: podinfo
  chart: oci://ghcr.io/stefanprodan/charts/podinfo
  version: 6.7.0
  namespace: podinfo
  values_schema: {type: object, properties: {replicaCount: {type: integer}}}
"""
    )
    settings.catalogue_file = path
    reset_catalogue()
    entries = catalogue()
    assert entries["metrics-server"].version == "3.12.1"
    assert entries["metrics-server"].repository == "https://charts.example.com"
    assert entries["podinfo"].chart_ref() == "oci://ghcr.io/stefanprodan/charts/podinfo"
    assert "ingress-nginx" in entries


def test_mirror_applies_to_builtins(settings: Any) -> None:
    settings.chart_repository = "oci://registry.example.com/charts"
    reset_catalogue()
    entry = catalogue()["cert-manager"]
    assert entry.chart_ref() == "oci://registry.example.com/charts/cert-manager"


@pytest.mark.parametrize(
    "content",
    [
        "- name: Bad_Name\n  title: x\n  chart: x\n  version: 1.0.0\n  namespace: x\n",
        "- name: x\n  title: x\n  chart: x\n  version: 1.0.0\n  namespace: x\n"
        "  values_schema: {type: 12}\n",
        "- name: x\n  title: x\n  chart: x\n  version: 1.0.0\n  namespace: x\n"
        "  repository: ftp://nope\n",
        "{not yaml",
    ],
)
def test_bad_operator_file_is_refused(settings: Any, tmp_path: Path, content: str) -> None:
    path = tmp_path / "catalogue.yaml"
    path.write_text(content)
    settings.catalogue_file = path
    reset_catalogue()
    with pytest.raises(CatalogueError):
        catalogue()


def test_defaults_merge_under_values() -> None:
    entry = next(e for e in builtin_entries() if e.name == "cert-manager")
    merged = merged_values(entry, {"crds": {"keep": False}, "replicaCount": 2})
    assert merged == {"crds": {"enabled": True, "keep": False}, "replicaCount": 2}
