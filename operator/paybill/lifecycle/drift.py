"""Owned objects converge to the plan: what to do with the object of a name the operator would write, free of I/O.

Only an object the Tenant controls (its uid in a controller ownerReference) is ever overwritten; one it does not
control is a conflict, reported and left as it is. The managed fields are the manifest's top-level fields (spec,
rules, roleRef, subjects) and its labels; anything else on the object (status, annotations, other labels) is
the server's or the user's, except one annotation: a digest of what the operator last wrote, so that an object
the plan now wants different is said to be updated, and only one edited behind the operator's back is drift.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from ..api.tenant import TenantPhase
from .tenant import controlled_by, controller_reference

UNMANAGED = ("apiVersion", "kind", "metadata", "status")
WRITTEN = "paybill.dev/written"  # annotation: digest of the managed fields the operator last wrote
Key = tuple[str, str, str]  # (kind, namespace or "", name)


class OwnedAction(StrEnum):
    CREATE = "Create"
    UPDATE = "Update"  # the plan wants it different from what the operator last wrote
    REVERT = "Revert"  # edited behind the operator's back: it is what was written, no longer what is there
    KEEP = "Keep"
    CONFLICT = "Conflict"


class ObjectConflict(Exception):
    """An object has the name the operator would use and the Tenant does not control it: never overwritten."""


def key_of(manifest: Mapping[str, Any]) -> Key:
    meta = manifest["metadata"]
    return manifest["kind"], meta.get("namespace") or "", meta["name"]


def describe(manifest: Mapping[str, Any]) -> str:
    kind, namespace, name = key_of(manifest)
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


def owned_action(existing: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> OwnedAction:
    """Create what is missing, update what drifted from `desired`, keep what matches; a conflict if the object
    is not controlled by the desired owner (by uid)."""
    if existing is None:
        return OwnedAction.CREATE
    owner = controller_reference(desired)
    if not controlled_by(existing, owner["uid"], owner["kind"]):
        return OwnedAction.CONFLICT
    if in_sync(existing, desired):
        return OwnedAction.KEEP
    annotations = (existing.get("metadata") or {}).get("annotations") or {}
    return OwnedAction.REVERT if annotations.get(WRITTEN) == written(desired) else OwnedAction.UPDATE


def written(desired: Mapping[str, Any]) -> str:
    """The digest of what the operator writes for `desired`: its managed fields and labels."""
    managed = {field: value for field, value in desired.items() if field not in UNMANAGED}
    managed["labels"] = desired["metadata"].get("labels") or {}
    return hashlib.sha256(json.dumps(managed, sort_keys=True).encode()).hexdigest()[:16]


def stamped(desired: Mapping[str, Any]) -> dict[str, Any]:
    """`desired` as created: annotated with the digest of what is written."""
    meta = dict(desired["metadata"])
    meta["annotations"] = {**(meta.get("annotations") or {}), WRITTEN: written(desired)}
    return {**desired, "metadata": meta}


def in_sync(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    labels = (existing.get("metadata") or {}).get("labels") or {}
    wanted = desired["metadata"].get("labels") or {}
    return all(labels.get(k) == v for k, v in wanted.items()) and all(
        same(value, existing.get(field)) for field, value in desired.items() if field not in UNMANAGED
    )


def same(desired: Any, observed: Any) -> bool:
    """Equal as the apiserver stores it: quantities by value ("1" is "1000m"), everything else exactly."""
    if isinstance(desired, dict) and isinstance(observed, dict):
        return desired.keys() == observed.keys() and all(same(v, observed[k]) for k, v in desired.items())
    if isinstance(desired, list) and isinstance(observed, list):
        return len(desired) == len(observed) and all(same(d, o) for d, o in zip(desired, observed, strict=True))
    if isinstance(desired, str) and isinstance(observed, str) and desired != observed:
        return _quantity(desired) is not None and _quantity(desired) == _quantity(observed)
    return bool(desired == observed) and type(desired) is type(observed)


def _quantity(text: str) -> Decimal | None:
    if not text[:1].isdigit():
        return None
    try:
        return Decimal(parse_quantity(text))
    except (ValueError, InvalidOperation):
        return None


def converged(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The body of an update (PUT) that brings `existing` back to `desired`: its managed fields replaced whole,
    its labels added to, the digest of what is written recorded, its resourceVersion kept (the update only lands
    on the version that was checked)."""
    meta = dict(existing["metadata"])
    meta["labels"] = {**(meta.get("labels") or {}), **(desired["metadata"].get("labels") or {})}
    meta["annotations"] = {**(meta.get("annotations") or {}), WRITTEN: written(desired)}
    managed = {field: value for field, value in desired.items() if field not in UNMANAGED}
    return {**existing, **managed, "metadata": meta}


def conflict(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> ObjectConflict:
    owner = controller_reference(desired)
    return ObjectConflict(
        f"{describe(existing)} exists and is not controlled by {owner['kind']} {owner['name']}; it is left as it is"
    )


@dataclass(frozen=True)
class Drift:
    manifest: Mapping[str, Any]
    action: OwnedAction
    resource_version: str

    def __str__(self) -> str:
        return f"{describe(self.manifest)}: {self.action}"


def drift(desired: Sequence[Mapping[str, Any]], observed: Mapping[Key, Mapping[str, Any]]) -> list[Drift]:
    """Every desired object that is missing, changed or someone else's in `observed` (objects by key)."""
    found = []
    for manifest in desired:
        existing = observed.get(key_of(manifest))
        action = owned_action(existing, manifest)
        if action != OwnedAction.KEEP:
            version = str(((existing or {}).get("metadata") or {}).get("resourceVersion", ""))
            found.append(Drift(manifest, action, version))
    return found


def maintained(tenant: Mapping[str, Any]) -> bool:
    """Whether the Tenant's owned objects are kept as the plan says: not once it is being deleted or offboarded."""
    phase = (tenant.get("status") or {}).get("phase")
    return not (
        (tenant.get("metadata") or {}).get("deletionTimestamp")
        or (tenant.get("spec") or {}).get("offboard")
        or phase in (TenantPhase.OFFBOARDING, TenantPhase.OFFBOARDED)
    )
