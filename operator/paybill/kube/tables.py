"""Server-side printing (meta.k8s.io Table) so `kubectl get` shows the columns a real API server prints.

CustomResources print their CRD's additionalPrinterColumns after Name; built-in kinds print the columns of
kube-apiserver's printers (Events: LAST SEEN, TYPE, REASON, OBJECT, MESSAGE, and five more at priority 1 for
``-o wide``). Each row carries the object as ``includeObject`` asks: its metadata (the default), all of it
(``Object``, which ``kubectl --sort-by`` needs) or nothing (``None``).
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .conversion import core_event
from .registry import ResourceType

INCLUDE_OBJECT = ("None", "Metadata", "Object")
NAME_DESCRIPTION = "Name must be unique within a namespace."
_FILTER = re.compile(r"^\?\(@\.([\w.]+)\s*==\s*[\"']([^\"']*)[\"']\)$")

Cell = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class Column:
    name: str
    cell: Cell
    type: str = "string"
    priority: int = 0
    format: str = ""
    description: str = ""

    def definition(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        }


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
                    following.extend(
                        item for item in node if str(jsonpath(item, key)[:1] and jsonpath(item, key)[0]) == value
                    )
            elif isinstance(node, dict) and token in node:
                following.append(node[token])
        nodes = following
    return nodes


def human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration: `45s`, `3m20s`, `15m`, `5h10m`, `20h`, `3d4h`, `30d`, `2y10d`."""
    whole = int(seconds)
    if whole < -1:
        return "<invalid>"
    if whole < 0:
        return "0s"
    if whole < 120:
        return f"{whole}s"
    minutes, hours = whole // 60, whole // 3600
    if minutes < 10:
        return f"{minutes}m{whole % 60}s" if whole % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def human_age(timestamp: str | None, now: datetime.datetime | None = None) -> str:
    """The age of an RFC 3339 timestamp as kubectl prints it; `<unknown>` when there is none."""
    if not timestamp:
        return "<unknown>"
    try:
        then = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "<invalid>"
    return human_duration(((now or datetime.datetime.now(datetime.UTC)) - then).total_seconds())


def _custom_cell(path: str, column_type: str) -> Cell:
    def cell(obj: dict[str, Any]) -> Any:
        values = jsonpath(obj, path)
        if not values or values[0] is None:
            return None
        value = values[0]
        if column_type == "date":
            return human_age(value) if isinstance(value, str) else None
        if isinstance(value, (dict, list)):
            return json.dumps(value, separators=(",", ":"))
        return value

    return cell


def _name(obj: dict[str, Any]) -> str:
    return str(obj["metadata"]["name"])


NAME = Column("Name", _name, format="name", description=NAME_DESCRIPTION)
AGE = Column(
    "Age",
    lambda obj: human_age(obj["metadata"].get("creationTimestamp")),
    description="CreationTimestamp is a timestamp representing the server time when this object was created.",
)


def _event_first_seen(event: dict[str, Any]) -> str:
    return human_age(event.get("firstTimestamp") or event.get("eventTime"))


def _event_last_seen(event: dict[str, Any]) -> str:
    if (event.get("series") or {}).get("lastObservedTime"):
        return human_age(event["series"]["lastObservedTime"])
    return human_age(event["lastTimestamp"]) if event.get("lastTimestamp") else _event_first_seen(event)


def _event_count(event: dict[str, Any]) -> int:
    return int((event.get("series") or {}).get("count") or event.get("count") or 1)


def _event_object(event: dict[str, Any]) -> str:
    involved = event.get("involvedObject") or {}
    kind = str(involved.get("kind") or "").lower()
    return f"{kind}/{involved['name']}" if involved.get("name") else kind


def _event_source(event: dict[str, Any]) -> str:
    source = event.get("source") or {}
    component = source.get("component") or event.get("reportingComponent") or ""
    instance = source.get("host") or event.get("reportingInstance") or ""
    return f"{component}, {instance}" if instance else component


EVENT_COLUMNS = (
    Column(
        "Last Seen",
        _event_last_seen,
        description="The time at which the most recent occurrence of this event was recorded.",
    ),
    Column("Type", lambda e: e.get("type", ""), description="Type of this event (Normal, Warning)."),
    Column(
        "Reason",
        lambda e: e.get("reason", ""),
        description="The reason for the transition into the object's current status.",
    ),
    Column("Object", _event_object, description="The object that this event is about."),
    Column(
        "Subobject",
        lambda e: (e.get("involvedObject") or {}).get("fieldPath", ""),
        priority=1,
        description="A piece of the object the event is about.",
    ),
    Column("Source", _event_source, priority=1, description="The component reporting this event."),
    Column("Message", lambda e: str(e.get("message", "")).strip(), description="A description of the event."),
    Column("First Seen", _event_first_seen, priority=1, description="The time at which the event was first recorded."),
    Column("Count", _event_count, priority=1, description="The number of times this event has occurred."),
    Column("Name", _name, priority=1, format="name", description=NAME_DESCRIPTION),
)

BUILTIN_COLUMNS: dict[str, tuple[Column, ...]] = {
    "Namespace": (
        NAME,
        Column(
            "Status",
            lambda ns: (ns.get("status") or {}).get("phase", ""),
            description="The current lifecycle phase of the namespace.",
        ),
        AGE,
    ),
    "Secret": (
        NAME,
        Column("Type", lambda s: s.get("type", "Opaque"), description="The type of the secret."),
        Column(
            "Data",
            lambda s: len(s.get("data") or {}) + len(s.get("stringData") or {}),
            type="string",
            description="The number of keys in the secret.",
        ),
        AGE,
    ),
    "ConfigMap": (
        NAME,
        Column(
            "Data",
            lambda c: len(c.get("data") or {}) + len(c.get("binaryData") or {}),
            description="The number of keys in the config map.",
        ),
        AGE,
    ),
    "Event": EVENT_COLUMNS,
}


def columns(rtype: ResourceType) -> tuple[Column, ...]:
    """What `kubectl get` prints for a resource type: the CRD's printer columns, or a built-in printer's."""
    if rtype.custom:
        custom = rtype.printer_columns or ({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},)
        return (
            NAME,
            *(
                Column(
                    c["name"],
                    _custom_cell(c["jsonPath"], c.get("type", "string")),
                    c.get("type", "string"),
                    int(c.get("priority", 0)),
                    c.get("format", ""),
                    c.get("description", ""),
                )
                for c in custom
            ),
        )
    return BUILTIN_COLUMNS.get(rtype.kind, (NAME, AGE))


def _row_object(obj: dict[str, Any], include_object: str) -> dict[str, Any]:
    if include_object == "Object":
        return {"object": obj}
    if include_object == "Metadata":
        return {
            "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}
        }
    return {}


def table(
    rtype: ResourceType, objects: list[dict[str, Any]], resource_version: str, include_object: str = "Metadata"
) -> dict[str, Any]:
    """A meta.k8s.io/v1 Table of ``objects``; ``include_object`` is one of :data:`INCLUDE_OBJECT`."""
    shown = columns(rtype)
    printed = [core_event(obj) for obj in objects] if rtype.kind == "Event" else objects
    rows = [
        {"cells": [column.cell(row) for column in shown], **_row_object(obj, include_object)}
        for row, obj in zip(printed, objects, strict=True)
    ]
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [column.definition() for column in shown],
        "rows": rows,
    }
