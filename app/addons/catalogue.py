"""The add-on catalogue: pinned Helm charts with a values schema, built in or from the operator.

Built-in entries pin an ingress controller, cert-manager and metrics-server. The operator adds
or replaces entries with `CLUSTERPORT_ADDONS_CATALOGUE_FILE` (a YAML or JSON list) and can point
every built-in chart at one mirror with `CLUSTERPORT_ADDONS_CHART_REPOSITORY`. Values are
checked against the entry's JSON schema before anything is recorded or started.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated, Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter

from app.addons.settings import get_addon_settings
from app.core.validation import DNSLabel

_SCHEMAS = Path(__file__).parent / "values_schemas"
# Install Jobs are named `install-<name>` / `uninstall-<name>` and their pods get a 6-character
# suffix: a 40-character name keeps every derived name within Kubernetes' 63.
MAX_NAME_LENGTH = 40


def _chart_reference(value: str) -> str:
    if value.startswith("oci://") or value.startswith("/"):
        return value
    if "/" in value or not value:
        raise ValueError("must be a chart name, an oci:// reference or an absolute path")
    return value


def _repository(value: str) -> str:
    if not value.startswith(("https://", "http://", "oci://")):
        raise ValueError("must be an http(s):// chart repository or an oci:// registry path")
    return value.rstrip("/")


def _schema(value: dict[str, Any]) -> dict[str, Any]:
    try:
        Draft202012Validator.check_schema(value)
    except SchemaError as exc:
        raise ValueError(f"is not a valid JSON schema ({exc.validator})") from None
    return value


AddonName = Annotated[DNSLabel, StringConstraints(max_length=MAX_NAME_LENGTH)]


class CatalogueEntry(BaseModel):
    """One installable add-on: a chart at a pinned version and what values it accepts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: AddonName
    title: str = Field(max_length=100)
    description: str = Field(default="", max_length=1000)
    # A chart name in `repository`, an oci:// reference, or a path in the clusterport image.
    chart: Annotated[str, AfterValidator(_chart_reference)]
    version: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9.+_-]+$")
    repository: Annotated[str, AfterValidator(_repository)] | None = None
    # The release's namespace (created by helm when missing).
    namespace: DNSLabel
    values_schema: Annotated[dict[str, Any], AfterValidator(_schema)] = Field(
        default_factory=lambda: {"type": "object"}
    )
    default_values: dict[str, Any] = Field(default_factory=dict)
    # The ClusterRole the install pod's service account is bound to (charts create CRDs,
    # ClusterRoles and webhooks, so cluster-admin is what most of them need).
    install_cluster_role: str = Field(default="cluster-admin", pattern=r"^[a-z0-9:.-]{1,253}$")

    def chart_ref(self) -> str:
        """What `helm upgrade --install` takes as its chart argument."""
        if self.chart.startswith(("oci://", "/")):
            return self.chart
        if self.repository and self.repository.startswith("oci://"):
            return f"{self.repository}/{self.chart}"
        return self.chart


def _load_schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((_SCHEMAS / f"{name}.json").read_text())
    return loaded


def builtin_entries() -> list[CatalogueEntry]:
    return [
        CatalogueEntry(
            name="ingress-nginx",
            title="NGINX Ingress Controller",
            description="Routes HTTP(S) traffic to Services through Ingress objects.",
            chart="ingress-nginx",
            version="4.11.0",
            repository="https://kubernetes.github.io/ingress-nginx",
            namespace="ingress-nginx",
            values_schema=_load_schema("ingress-nginx"),
        ),
        CatalogueEntry(
            name="cert-manager",
            title="cert-manager",
            description="Issues and renews TLS certificates (ACME, Vault, private CAs).",
            chart="cert-manager",
            version="v1.16.3",
            repository="https://charts.jetstack.io",
            namespace="cert-manager",
            values_schema=_load_schema("cert-manager"),
            default_values={"crds": {"enabled": True}},
        ),
        CatalogueEntry(
            name="metrics-server",
            title="Metrics Server",
            description="Resource metrics for `kubectl top` and Horizontal Pod Autoscalers.",
            chart="metrics-server",
            version="3.12.2",
            repository="https://kubernetes-sigs.github.io/metrics-server",
            namespace="kube-system",
            values_schema=_load_schema("metrics-server"),
        ),
    ]


class CatalogueError(Exception):
    """The operator's catalogue file cannot be used."""


_ENTRIES = TypeAdapter(list[CatalogueEntry])


def _operator_entries(path: Path) -> list[CatalogueEntry]:
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise CatalogueError(f"cannot read the add-on catalogue file {path}") from exc
    if raw is None:
        return []
    try:
        return _ENTRIES.validate_python(raw)
    except ValueError as exc:
        raise CatalogueError(f"the add-on catalogue file {path} is not valid: {exc}") from exc


@functools.cache
def catalogue() -> dict[str, CatalogueEntry]:
    """Every entry by name: the built-ins (with the mirror applied), then the operator's file."""
    settings = get_addon_settings()
    entries = {}
    for entry in builtin_entries():
        if settings.chart_repository:
            entry = entry.model_copy(update={"repository": _repository(settings.chart_repository)})
        entries[entry.name] = entry
    if settings.catalogue_file is not None:
        for entry in _operator_entries(settings.catalogue_file):
            entries[entry.name] = entry
    return entries


def reset_catalogue() -> None:
    """Read the catalogue file again (tests, or after a configuration change)."""
    catalogue.cache_clear()


def _location(error: ValidationError) -> str:
    path = ".".join(str(part) for part in error.absolute_path)
    return path or "(values)"


def _describe(error: ValidationError) -> str:
    """What is wrong, without repeating the value (it may be a secret)."""
    keyword = str(error.validator)
    expected: Any = error.validator_value
    if keyword == "type":
        return f"must be of type {expected}"
    if keyword == "enum":
        return "must be one of " + ", ".join(json.dumps(v) for v in expected)
    if keyword == "const":
        return f"must be {json.dumps(expected)}"
    if keyword in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        words = {
            "minimum": ">=",
            "exclusiveMinimum": ">",
            "maximum": "<=",
            "exclusiveMaximum": "<",
        }
        return f"must be {words[keyword]} {expected}"
    if keyword in ("minLength", "maxLength", "minItems", "maxItems"):
        return f"breaks {keyword} {expected}"
    if keyword == "pattern":
        return f"must match the pattern {expected}"
    if keyword in ("required", "additionalProperties", "propertyNames"):
        return error.message  # names keys only, never values
    return f"is not valid ({keyword})"


def validate_values(entry: CatalogueEntry, values: dict[str, Any]) -> list[dict[str, str]]:
    """Problems with `values` under the entry's schema, each as `{field, message}`."""
    validator = Draft202012Validator(entry.values_schema)
    errors = sorted(validator.iter_errors(values), key=lambda e: list(map(str, e.absolute_path)))
    return [{"field": _location(e), "message": _describe(e)} for e in errors[:20]]


def merged_values(entry: CatalogueEntry, values: dict[str, Any]) -> dict[str, Any]:
    """The entry's defaults overlaid with the caller's values (nested maps merge)."""

    def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
        out = dict(base)
        for key, value in over.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = value
        return out

    return merge(entry.default_values, values)
