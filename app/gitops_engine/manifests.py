"""Rendered manifests: YAML documents parsed into objects, their identities and a digest."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml


class ManifestError(Exception):
    """Rendered input the engine refuses; `code` is stable, `message` names file and line."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


@dataclass(frozen=True, order=True)
class ObjectRef:
    """One object's identity in a cluster; `namespace` is "" for cluster-scoped kinds."""

    api_version: str
    kind: str
    namespace: str
    name: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind}/{where}{self.name}"

    def to_dict(self) -> dict[str, str]:
        return {
            "api_version": self.api_version,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ObjectRef:
        return cls(
            str(data["api_version"]),
            str(data["kind"]),
            str(data.get("namespace") or ""),
            str(data["name"]),
        )

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> ObjectRef:
        meta = obj.get("metadata") or {}
        return cls(
            str(obj["apiVersion"]),
            str(obj["kind"]),
            str(meta.get("namespace") or ""),
            str(meta["name"]),
        )


def _document_error(path: str, exc: yaml.YAMLError) -> ManifestError:
    mark = getattr(exc, "problem_mark", None)
    where = f"{path}:{mark.line + 1}" if mark is not None else path
    problem = getattr(exc, "problem", None) or "invalid YAML"
    return ManifestError("malformed_yaml", f"{where}: {problem}")


def _check_object(path: str, line: int, doc: Any) -> dict[str, Any]:
    where = f"{path}:{line}"
    if not isinstance(doc, dict):
        raise ManifestError("not_an_object", f"{where}: a document must be a mapping")
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if not isinstance(api_version, str) or not api_version:
        raise ManifestError("missing_api_version", f"{where}: the object has no apiVersion")
    if not isinstance(kind, str) or not kind:
        raise ManifestError("missing_kind", f"{where}: the object has no kind")
    meta = doc.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        raise ManifestError("missing_name", f"{where}: the object has no metadata.name")
    namespace = meta.get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        raise ManifestError("invalid_namespace", f"{where}: metadata.namespace must be a string")
    return doc


def _expand_list(doc: dict[str, Any]) -> list[Any]:
    # `kind: List` (kubectl's own output shape) holds its objects in `items`.
    if doc.get("kind") == "List" and isinstance(doc.get("items"), list):
        return list(doc["items"])
    return [doc]


def parse_documents(files: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
    """Every object of every (path, text) in order; empty documents are skipped. Malformed
    YAML and documents that are not Kubernetes objects raise `ManifestError` with file:line."""
    objects: list[dict[str, Any]] = []
    for path, text in files:
        try:
            loader = yaml.SafeLoader(text)
            try:
                while loader.check_node():
                    node = loader.get_node()
                    if node is None:
                        continue
                    line = node.start_mark.line + 1
                    doc = loader.construct_document(node)
                    if doc is None:
                        continue
                    for item in _expand_list(doc) if isinstance(doc, dict) else [doc]:
                        objects.append(_check_object(path, line, item))
            finally:
                loader.dispose()
        except yaml.YAMLError as exc:
            raise _document_error(path, exc) from None
    return objects


def canonical_json(objects: list[dict[str, Any]]) -> str:
    return json.dumps(objects, sort_keys=True, separators=(",", ":"))


def digest(objects: list[dict[str, Any]]) -> str:
    """sha256 of the objects in canonical JSON: what a pinned rollback checks."""
    return "sha256:" + hashlib.sha256(canonical_json(objects).encode()).hexdigest()
