"""Server-side printing (meta.k8s.io Table) so `kubectl get` shows printer columns."""

from __future__ import annotations

import datetime
import json
import re
from typing import Any

from .registry import ResourceType

_FILTER = re.compile(r"^\?\(@\.([\w.]+)\s*==\s*[\"']([^\"']*)[\"']\)$")


def jsonpath(obj: Any, path: str) -> list[Any]:
    """The subset of JSONPath CRD printer columns use: `.a.b`, `[n]`, `[*]` and `[?(@.k=="v")]`."""
    nodes = [obj]
    for token in re.findall(r"\[[^\]]*\]|[^.\[\]]+", path.strip().lstrip("{").rstrip("}").lstrip(".")):
        following: list[Any] = []
        for node in nodes:
            if token.startswith("["):
                inner = token[1:-1]
                if not isinstance(node, list):
                    continue
                if inner == "*":
                    following.extend(node)
                elif inner.lstrip("-").isdigit():
                    index = int(inner)
                    if -len(node) <= index < len(node):
                        following.append(node[index])
                elif match := _FILTER.match(inner):
                    key, value = match.groups()
                    following.extend(item for item in node if str(jsonpath(item, key)[:1] and
                                                                   jsonpath(item, key)[0]) == value)
            elif isinstance(node, dict) and token in node:
                following.append(node[token])
        nodes = following
    return nodes


def human_age(timestamp: str | None, now: datetime.datetime | None = None) -> str:
    if not timestamp:
        return "<unknown>"
    created = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    seconds = int(((now or datetime.datetime.now(datetime.UTC)) - created).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _cell(values: list[Any], column_type: str) -> Any:
    if not values:
        return None
    value = values[0]
    if column_type == "date":
        return human_age(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return value


def _columns(rtype: ResourceType) -> list[dict[str, Any]]:
    if rtype.printer_columns:
        return [dict(c) for c in rtype.printer_columns]
    columns: list[dict[str, Any]] = []
    if rtype.kind == "Namespace":
        columns.append({"name": "Status", "type": "string", "jsonPath": ".status.phase"})
    if rtype.kind == "Secret":
        columns.append({"name": "Type", "type": "string", "jsonPath": ".type"})
    columns.append({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"})
    return columns


def table(rtype: ResourceType, objects: list[dict[str, Any]], resource_version: str) -> dict[str, Any]:
    columns = _columns(rtype)
    definitions = [{"name": "Name", "type": "string", "format": "name", "priority": 0,
                    "description": "Name must be unique within a namespace."}]
    definitions += [{"name": c["name"], "type": c.get("type", "string"), "format": c.get("format", ""),
                     "priority": c.get("priority", 0), "description": c.get("description", "")} for c in columns]
    rows = []
    for obj in objects:
        cells = [obj["metadata"]["name"]]
        cells += [_cell(jsonpath(obj, c["jsonPath"]), c.get("type", "string")) for c in columns]
        rows.append({"cells": cells, "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                                "metadata": obj["metadata"]}})
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version},
            "columnDefinitions": definitions, "rows": rows}
