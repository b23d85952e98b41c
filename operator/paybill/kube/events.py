"""What kube-apiserver checks when an Event is written (core/v1 legacy rules; events.k8s.io/v1 strict rules).

An Event about a cluster-scoped object lives in `default` (or `kube-system`) with an empty
involvedObject.namespace: that is what `kubectl describe` searches for. Without eventTime (old clients) the
Event's namespace must match the involved object's; with eventTime the reporting fields are required.
"""

from __future__ import annotations

import re
from typing import Any

from .conversion import EVENTS_V1, core_event
from .schema import FieldError

QUALIFIED_NAME = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LIMITS = {"reportingInstance": 128, "action": 128, "reason": 128, "message": 1024}  # message: the note limit


def _invalid(path: str, value: Any, detail: str) -> FieldError:
    return FieldError("FieldValueInvalid", path, f'Invalid value: "{value}": {detail}')


def _required(path: str) -> FieldError:
    return FieldError("FieldValueRequired", path, "Required value")


def _namespace_errors(event: dict[str, Any]) -> list[FieldError]:
    namespace = event["metadata"].get("namespace") or ""
    involved = (event.get("involvedObject") or {}).get("namespace") or ""
    if event.get("eventTime"):
        allowed = involved or namespace in ("default", "kube-system")
    else:
        allowed = namespace == involved or (not involved and namespace in ("", "default"))
    return [] if allowed else [_invalid("involvedObject.namespace", involved, "does not match event.namespace")]


def _reporting_errors(event: dict[str, Any], controller_field: str) -> list[FieldError]:
    errors = []
    controller = event.get("reportingComponent") or ""
    if not controller:
        errors.append(_required(controller_field))
    elif not QUALIFIED_NAME.match(controller):
        errors.append(
            _invalid(
                controller_field,
                controller,
                "name part must consist of alphanumeric characters, "
                "'-', '_' or '.', and must start and end with an "
                "alphanumeric character",
            )
        )
    for name, limit in LIMITS.items():
        value = str(event.get(name) or "")
        if not value and name != "message":
            errors.append(_required(name))
        elif len(value) > limit:
            errors.append(_invalid(name, "", f"can have at most {limit} characters"))
    return errors


def _strict_errors(event: dict[str, Any]) -> list[FieldError]:
    """events.k8s.io/v1 creates: eventTime and a known type, none of the deprecated core fields."""
    errors = [] if event.get("eventTime") else [_required("eventTime")]
    if event.get("type") not in ("Normal", "Warning"):
        errors.append(_invalid("type", "", f"has invalid value: {event.get('type') or ''}"))
    deprecated = {
        "firstTimestamp": "deprecatedFirstTimestamp",
        "lastTimestamp": "deprecatedLastTimestamp",
        "count": "deprecatedCount",
        "source": "deprecatedSource",
    }
    errors += [_invalid(path, "", "needs to be unset") for name, path in deprecated.items() if event.get(name)]
    return errors


def validate_event(obj: dict[str, Any], creating: bool) -> list[FieldError]:
    """The errors kube-apiserver answers 422 with for this Event (empty when it would accept it)."""
    strict = obj.get("apiVersion") == EVENTS_V1
    event = core_event(obj)
    errors = _namespace_errors(event)
    if event.get("eventTime"):
        errors += _reporting_errors(event, "reportingController" if strict else "reportingComponent")
    if strict and creating:
        errors += _strict_errors(event)
    return errors
