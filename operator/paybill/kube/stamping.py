"""Metadata stamping: what the apiserver sets on a new object, checks on every object's metadata, and how it
tells a spec change (a new generation) from a write that changed nothing."""

from __future__ import annotations

import datetime
import re
import uuid
from typing import Any

from .registry import NAMESPACE_KEY, ResourceType
from .replies import invalid
from .schema import FieldError

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
MAX_ANNOTATIONS_BYTES = 262144


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stamp_new(rtype: ResourceType, obj: dict[str, Any]) -> None:
    """What the apiserver sets on every new object."""
    meta = obj.setdefault("metadata", {})
    obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
    for system_field in ("uid", "resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
        meta.pop(system_field, None)
    if rtype.status_subresource and rtype.custom:
        obj.pop("status", None)
    if rtype.key == NAMESPACE_KEY:
        obj["spec"] = {"finalizers": ["kubernetes"]}
        obj["status"] = {"phase": "Active"}
    meta.update(uid=str(uuid.uuid4()), generation=1, creationTimestamp=now())


def named(rtype: ResourceType, obj: dict[str, Any]) -> None:
    """A new object's name, once the mutating webhooks have run: made from generateName if it has none, then
    checked (422 without one)."""
    meta = obj["metadata"]
    if not meta.get("name") and meta.get("generateName"):  # the prefix cut to 58, as kube-apiserver does
        meta["name"] = str(meta["generateName"])[:58] + uuid.uuid4().hex[:5]
    check_meta(rtype, obj)
    if rtype.key == NAMESPACE_KEY:
        meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]


def qualified_name_problem(key: str) -> str | None:
    """What kube-apiserver finds wrong with a label or annotation key ([prefix/]name), or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not DNS_SUBDOMAIN.match(prefix)):
        return "prefix part a lowercase RFC 1123 subdomain of at most 253 characters"
    if len(name) > 63:
        return "name part must be no more than 63 characters"
    if not QUALIFIED_NAME.match(name):
        return (
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
            "alphanumeric character"
        )
    return None


def check_meta(rtype: ResourceType, obj: dict[str, Any]) -> None:
    meta = obj["metadata"]
    name = meta.get("name") or ""
    errors = []
    pattern = DNS_LABEL if rtype.key == NAMESPACE_KEY else DNS_SUBDOMAIN
    if not name:
        errors.append(
            FieldError("FieldValueRequired", "metadata.name", "Required value: name or generateName is required")
        )
    elif len(name) > (limit := 63 if pattern is DNS_LABEL else 253):
        errors.append(
            FieldError(
                "FieldValueInvalid",
                "metadata.name",
                f'Invalid value: "{name}": must be no more than {limit} characters',
            )
        )
    elif not pattern.match(name):
        allowed = " or '-'" if pattern is DNS_LABEL else ", '-' or '.'"
        errors.append(
            FieldError(
                "FieldValueInvalid",
                "metadata.name",
                f'Invalid value: "{name}": a lowercase RFC 1123 '
                f"{'label' if pattern is DNS_LABEL else 'subdomain'} must consist of lower "
                f"case alphanumeric characters{allowed}, and must start and end with an "
                "alphanumeric character",
            )
        )
    annotations = meta.get("annotations") or {}
    if sum(len(k) + len(str(v)) for k, v in annotations.items()) > MAX_ANNOTATIONS_BYTES:
        errors.append(
            FieldError(
                "FieldValueTooLong",
                "metadata.annotations",
                f"Too long: must have at most {MAX_ANNOTATIONS_BYTES} bytes",
            )
        )
    for field, keys in (("annotations", annotations), ("labels", meta.get("labels") or {})):
        for key in keys:
            if (problem := qualified_name_problem(str(key))) is not None:
                errors.append(
                    FieldError("FieldValueInvalid", f"metadata.{field}", f'Invalid value: "{key}": {problem}')
                )
    for key, value in (meta.get("labels") or {}).items():
        if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
            errors.append(
                FieldError(
                    "FieldValueInvalid",
                    f"metadata.labels[{key}]",
                    f'Invalid value: "{value}": a valid label must be 63 characters or less, '
                    "alphanumeric, '-', '_' or '.'",
                )
            )
    if errors:
        raise invalid(rtype, name, errors)


def _body(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def spec_changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return _body(old) != _body(new) or (
        bool(new["metadata"].get("deletionTimestamp")) and not old["metadata"].get("deletionTimestamp")
    )


def unchanged(old: dict[str, Any], new: dict[str, Any]) -> bool:
    strip = lambda o: {**o, "metadata": {k: v for k, v in o["metadata"].items() if k != "resourceVersion"}}  # noqa: E731
    return strip(old) == strip(new)
