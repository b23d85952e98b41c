"""One stored collection served under several API versions, as kube-apiserver converts between them.

CRD versions share one schema here, so only apiVersion changes. Events are one collection served as core/v1
and as events.k8s.io/v1, whose fields carry newer names (involvedObject is regarding, message is note,
source is deprecatedSource...): an Event written through either group is read, selected and watched through
both.
"""

from __future__ import annotations

from typing import Any

EVENTS_V1 = "events.k8s.io/v1"
# core/v1 Event field -> events.k8s.io/v1 Event field (the others keep their names)
EVENT_RENAMES = {
    "involvedObject": "regarding",
    "message": "note",
    "reportingComponent": "reportingController",
    "source": "deprecatedSource",
    "firstTimestamp": "deprecatedFirstTimestamp",
    "lastTimestamp": "deprecatedLastTimestamp",
    "count": "deprecatedCount",
}
_EVENT_NAMES_BACK = {new: old for old, new in EVENT_RENAMES.items()}


def _renamed(obj: dict[str, Any], names: dict[str, str], api_version: str) -> dict[str, Any]:
    return {**{names.get(key, key): value for key, value in obj.items()}, "apiVersion": api_version}


def core_event(event: dict[str, Any]) -> dict[str, Any]:
    """An Event under its core/v1 field names, whichever group it was written through."""
    return _renamed(event, _EVENT_NAMES_BACK, "v1") if event.get("apiVersion") == EVENTS_V1 else event


def served(api_version: str, obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` as ``api_version`` presents it (the stored object itself when it is already in that version)."""
    stored = obj.get("apiVersion")
    if stored == api_version:
        return obj
    if obj.get("kind") == "Event" and EVENTS_V1 in (stored, api_version):
        event = core_event(obj)
        return _renamed(event, EVENT_RENAMES, EVENTS_V1) if api_version == EVENTS_V1 else event
    return {**obj, "apiVersion": api_version}
