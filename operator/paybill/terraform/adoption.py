"""Adopting what an interrupted apply made: cloud objects of the tenant that are not in its state, mapped to the
resource addresses the configuration is about to create, as Terraform 1.5+ `import {}` blocks. Pure.

An apply killed before Terraform wrote its state (it persists at the end, or every 20 s) leaves objects in the
cloud that no state knows: a second apply would make them again (a second VPC) or fail on a name taken (an IAM
role). Before planning again, the runner asks the cloud adapter for the tenant's objects (by tag, and by the
deterministic names the modules give) and this maps each to the one planned `create` it is: same type, and the
same name (bucket, identifier, role, group) or `Name` tag. Nothing is guessed: an object that matches several
addresses, or an address matched by several objects, or an object no address of the configuration would create,
is a problem that stops the run, named. Nothing is trusted by name alone: an object must carry the tenant's tag
and the managed-by tag (an untaggable one, an IAM inline policy, must belong to such a parent).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .contract import MANAGED_BY, TAG_KEYS

TENANT_TAG = TAG_KEYS[0]
NAME_ATTRIBUTES = ("name", "bucket", "identifier")  # where a resource's deterministic name is, when it has one
IMPORT_FILE = "paybill_adopt.tf"
Key = tuple[str, str]  # (resource type, id): ids repeat across types (a bucket and a role both named paybill-<t>)
_ADDRESS = re.compile(r'^(module\.[a-z0-9_-]+(\[[^\]]+\])?\.)*[a-z][a-z0-9_]*\.[A-Za-z0-9_-]+(\[(\d+|"[^"\\]*")\])?$')


@dataclass(frozen=True)
class CloudObject:
    """One object a cloud adapter found for a tenant, as Terraform names it."""

    type: str  # the Terraform resource type: aws_vpc
    id: str  # what `import` takes for it (Terraform's id attribute)
    name: str = ""  # its deterministic name (bucket, role name, DB identifier, group name); "" when it has none
    tags: Mapping[str, str] = field(default_factory=dict)
    parent: Key | None = None  # for an object that carries no tags (an inline policy): (type, id) of its owner

    @property
    def key(self) -> Key:
        return self.type, self.id


@dataclass(frozen=True)
class PlannedCreate:
    """A resource the plan is about to create, with what identifies it before it exists."""

    address: str
    type: str
    names: frozenset[str] = frozenset()  # its known name-like attribute values
    tag_name: str = ""  # its `Name` tag, when known


@dataclass(frozen=True)
class Import:
    address: str
    id: str
    type: str


@dataclass(frozen=True)
class Adoption:
    imports: tuple[Import, ...] = ()
    refused: tuple[str, ...] = ()  # objects found but not the tenant's to adopt (another tenant's, unmanaged)
    problems: tuple[str, ...] = ()  # what cannot be mapped without guessing: the run stops, naming them

    @property
    def record(self) -> dict[str, Any]:
        """For the audit chain."""
        return {
            "imports": [{"address": i.address, "id": i.id} for i in self.imports],
            "refused": list(self.refused),
        }


def planned_creates(plan_json: Mapping[str, Any]) -> list[PlannedCreate]:
    """The resources `terraform show -json` of a plan says it will create (replacements included)."""
    creates = []
    for change in plan_json.get("resource_changes") or []:
        if change.get("mode", "managed") != "managed" or "create" not in (change.get("change") or {}).get(
            "actions", []
        ):
            continue
        after = (change.get("change") or {}).get("after") or {}
        names = frozenset(str(after[key]) for key in NAME_ATTRIBUTES if isinstance(after.get(key), str) and after[key])
        tags = after.get("tags")
        tags = tags if isinstance(tags, dict) else {}
        creates.append(PlannedCreate(change["address"], change["type"], names, str(tags.get("Name") or "")))
    return creates


def adopt(
    tenant: str, found: Iterable[CloudObject], tracked: Collection[Key], planned: Iterable[PlannedCreate]
) -> Adoption:
    """Map the tenant's untracked objects (`tracked`: the (type, id) its state holds) to the planned creates."""
    found = [obj for obj in found if obj.key not in tracked]
    refused = {obj.key: why for obj in found if obj.parent is None and (why := _not_ours(obj, tenant))}
    trusted_parents = set(tracked) | {obj.key for obj in found if obj.parent is None and obj.key not in refused}
    for obj in found:
        if obj.parent is not None and obj.parent not in trusted_parents:
            refused[obj.key] = f"belongs to {' '.join(obj.parent)}, which is not the tenant's to adopt"
    candidates = [obj for obj in found if obj.key not in refused]
    creates = list(planned)
    matches = {obj.key: _matches(obj, creates) for obj in candidates}
    claimed: dict[str, list[CloudObject]] = {}
    for obj in candidates:
        for create in matches[obj.key]:
            claimed.setdefault(create.address, []).append(obj)
    problems, imports = [], []
    for obj in sorted(candidates, key=lambda o: o.key):
        addresses = [create.address for create in matches[obj.key]]
        if not addresses:
            problems.append(f"{obj.type} {_label(obj)} is the tenant's but nothing in the configuration creates it")
        elif len(addresses) > 1:
            problems.append(f"{obj.type} {_label(obj)} could be any of {', '.join(sorted(addresses))}")
        elif len(claimed[addresses[0]]) == 1:
            imports.append(Import(addresses[0], obj.id, obj.type))
    for address, objects in sorted(claimed.items()):
        if len(objects) > 1:
            named = ", ".join(sorted(_label(obj) for obj in objects))
            problems.append(f"{address} could be any of {len(objects)} untracked {objects[0].type}: {named}")
    refusals = tuple(f"{obj.type} {_label(obj)}: {refused[obj.key]}" for obj in found if obj.key in refused)
    return Adoption(tuple(sorted(imports, key=lambda i: i.address)), refusals, tuple(problems))


def import_blocks(imports: Iterable[Import]) -> str:
    """The `import {}` blocks of a run's working directory (addresses checked, ids quoted as HCL literals)."""
    blocks = []
    for item in imports:
        if not _ADDRESS.fullmatch(item.address):
            raise ValueError(f"not a resource address: {item.address!r}")
        blocks.append(f"import {{\n  to = {item.address}\n  id = {_literal(item.id)}\n}}\n")
    return "\n".join(blocks)


def _not_ours(obj: CloudObject, tenant: str) -> str | None:
    owner = obj.tags.get(TENANT_TAG)
    if owner != tenant:
        return f"tagged for tenant {owner!r}" if owner else f"lacks the {TENANT_TAG} tag"
    key, value = MANAGED_BY
    if obj.tags.get(key) != value:
        return f"lacks the {key}={value} tag"
    return None


def _matches(obj: CloudObject, creates: list[PlannedCreate]) -> list[PlannedCreate]:
    """The planned creates this object is: by name, else by Name tag; one of a type only if it has neither."""
    same_type = [create for create in creates if create.type == obj.type]
    if obj.name:
        return [create for create in same_type if obj.name in create.names]
    tag_name = obj.tags.get("Name", "")
    if tag_name:
        return [create for create in same_type if create.tag_name == tag_name]
    return same_type


def _label(obj: CloudObject) -> str:
    return obj.id if not obj.name or obj.name == obj.id else f"{obj.id} ({obj.name})"


def _literal(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("${", "$${").replace("%{", "%%{")
    return f'"{escaped}"'
