"""OpenAPI v2 and v3 documents built from the served resource types (`kubectl explain`, field validation)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .registry import ResourceType

OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
_META_SCHEMA = {
    "type": "object",
    "description": "Standard object metadata: name, namespace, labels, annotations, finalizers, ...",
    "properties": {
        "name": {"type": "string", "description": "Name must be unique within a namespace."},
        "namespace": {"type": "string", "description": "Namespace the object lives in."},
        "labels": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "Map of string keys and values to organize and select objects.",
        },
        "annotations": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "Unstructured key-value data stored with the object.",
        },
        "finalizers": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Must be empty before the object is deleted from the registry.",
        },
        "uid": {"type": "string", "description": "Unique in time and space; set by the server."},
        "resourceVersion": {"type": "string", "description": "Opaque version for optimistic concurrency."},
        "generation": {"type": "integer", "description": "Sequence number of the desired state."},
        "creationTimestamp": {"type": "string", "format": "date-time"},
        "deletionTimestamp": {"type": "string", "format": "date-time"},
    },
}


def _definition_name(rtype: ResourceType) -> str:
    group = ".".join(reversed(rtype.group.split("."))) if rtype.group else "io.k8s.api.core"
    return f"{group}.{rtype.version}.{rtype.kind}"


def _gvk(rtype: ResourceType) -> dict[str, str]:
    return {"group": rtype.group, "version": rtype.version, "kind": rtype.kind}


def _schema(rtype: ResourceType, ref_prefix: str) -> dict[str, Any]:
    base = rtype.schema or {
        "type": "object",
        "description": rtype.description,
        "x-kubernetes-preserve-unknown-fields": True,
    }
    schema = json.loads(json.dumps(base))
    schema.setdefault("properties", {})["metadata"] = {
        "$ref": f"{ref_prefix}{OBJECT_META}",
        "description": "Standard object metadata.",
    }
    schema["x-kubernetes-group-version-kind"] = [_gvk(rtype)]
    return schema


def _paths(rtype: ResourceType, v3: bool) -> dict[str, Any]:
    prefix = f"/apis/{rtype.group}/{rtype.version}" if rtype.group else f"/api/{rtype.version}"
    scope = f"{prefix}/namespaces/{{namespace}}" if rtype.namespaced else prefix
    extension = {"x-kubernetes-group-version-kind": _gvk(rtype)}
    field_validation = {
        "name": "fieldValidation",
        "in": "query",
        "schema" if v3 else "type": {"type": "string"} if v3 else "string",
        "description": "Ignore, Warn or Strict handling of unknown fields.",
    }
    item = {
        "get": {"operationId": f"read{rtype.kind}", **extension},
        "put": {"operationId": f"replace{rtype.kind}", "parameters": [field_validation], **extension},
        "patch": {"operationId": f"patch{rtype.kind}", "parameters": [field_validation], **extension},
        "delete": {"operationId": f"delete{rtype.kind}", **extension},
    }
    collection = {
        "get": {"operationId": f"list{rtype.kind}", **extension},
        "post": {"operationId": f"create{rtype.kind}", "parameters": [field_validation], **extension},
    }
    paths = {f"{scope}/{rtype.plural}": collection, f"{scope}/{rtype.plural}/{{name}}": item}
    if rtype.status_subresource:
        paths[f"{scope}/{rtype.plural}/{{name}}/status"] = item
    return paths


def v3_document(rtypes: list[ResourceType]) -> dict[str, Any]:
    schemas: dict[str, Any] = {OBJECT_META: _META_SCHEMA}
    paths: dict[str, Any] = {}
    for rtype in rtypes:
        schemas[_definition_name(rtype)] = _schema(rtype, "#/components/schemas/")
        paths.update(_paths(rtype, v3=True))
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (Paybill emulated)", "version": "v1.31.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def v3_root(groups: dict[str, list[str]]) -> dict[str, Any]:
    paths = {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1"}}
    for group, versions in groups.items():
        for version in versions:
            paths[f"apis/{group}/{version}"] = {"serverRelativeURL": f"/openapi/v3/apis/{group}/{version}"}
    return {"paths": paths}


def v2_document(rtypes: list[ResourceType]) -> dict[str, Any]:
    definitions: dict[str, Any] = {OBJECT_META: _META_SCHEMA}
    paths: dict[str, Any] = {}
    for rtype in rtypes:
        definitions[_definition_name(rtype)] = _schema(rtype, "#/definitions/")
        paths.update(_paths(rtype, v3=False))
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes (Paybill emulated)", "version": "v1.31.0"},
        "paths": paths,
        "definitions": definitions,
    }


def etag(document: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:32]
