"""Shared pieces of every Paybill custom resource: status shape and CRD metadata."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field

GROUP = "paybill.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "paybill"


def list_map(*keys: str) -> dict[str, Any]:
    """A list keyed by `keys` (unique per item; server-side apply merges items by key)."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


LIST_SET: dict[str, Any] = {"x-kubernetes-list-type": "set"}  # unique scalars, merged as a set
LIST_ATOMIC: dict[str, Any] = {"x-kubernetes-list-type": "atomic"}  # replaced whole: order or repeats matter


class Model(BaseModel):
    """Base of every spec/status model: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, use_enum_values=True)


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(Model):
    """A standard Kubernetes condition (metav1.Condition)."""

    type: str = Field(
        description="Type of condition in CamelCase, e.g. Ready.", pattern=r"^[A-Z][A-Za-z0-9]*$", max_length=316
    )
    status: ConditionStatus = Field(description="Status of the condition: True, False or Unknown.")
    reason: str = Field(
        default="", description="Machine-readable CamelCase reason for the last transition.", max_length=1024
    )
    message: str = Field(default="", description="Human-readable details of the last transition.", max_length=32768)
    lastTransitionTime: str = Field(default="", description="When the condition last changed status (RFC 3339).")
    observedGeneration: int | None = Field(
        default=None, ge=0, description="The .metadata.generation the condition was set for."
    )


class Status(Model):
    """Status shape shared by all Paybill resources."""

    phase: str | None = Field(default=None, description="Coarse lifecycle phase of the object.")
    observedGeneration: int | None = Field(default=None, ge=0, description="The .metadata.generation last reconciled.")
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra=list_map("type"),
        description="Latest observations of the object's state.",
    )


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0
    format: str | None = None

    def to_crd(self) -> dict[str, Any]:
        column: dict[str, Any] = {"name": self.name, "type": self.type, "jsonPath": self.json_path}
        if self.description:
            column["description"] = self.description
        if self.priority:
            column["priority"] = self.priority
        if self.format:
            column["format"] = self.format
        return column


ROOT = "/"  # a ValidationRule path: the whole object (where CEL may read metadata.name)


@dataclass(frozen=True)
class ValidationRule:
    """A CEL rule (x-kubernetes-validations) placed at a path in the schema ("" = spec, ROOT = the object)."""

    rule: str
    message: str
    path: str = ""


@dataclass(frozen=True)
class CrdInfo:
    kind: str
    plural: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    description: str = ""
    printer_columns: tuple[PrinterColumn, ...] = ()
    validations: tuple[ValidationRule, ...] = field(default_factory=tuple)


READY_COLUMN = PrinterColumn(
    "Ready", '.status.conditions[?(@.type=="Ready")].status', description="Whether the object is ready."
)
PHASE_COLUMN = PrinterColumn("Phase", ".status.phase", description="Lifecycle phase.")
AGE_COLUMN = PrinterColumn("Age", ".metadata.creationTimestamp", type="date")


class CustomResource(Model):
    """A Paybill custom resource: spec + status, with its CRD metadata on the class."""

    crd: ClassVar[CrdInfo]
    spec: BaseModel
    status: Status | None = None

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> Self:
        """Validate a whole manifest (apiVersion, kind, metadata, spec) as this resource."""
        if manifest.get("apiVersion") != API_VERSION or manifest.get("kind") != cls.crd.kind:
            raise ValueError(
                f"expected apiVersion {API_VERSION} and kind {cls.crd.kind}, got "
                f"{manifest.get('apiVersion')!r} and {manifest.get('kind')!r}"
            )
        return cls.model_validate({k: v for k, v in manifest.items() if k in ("spec", "status")})

    @classmethod
    def api_path(cls, name: str | None = None, namespace: str | None = None) -> str:
        path = f"/apis/{GROUP}/{VERSION}"
        if cls.crd.namespaced and namespace:
            path += f"/namespaces/{namespace}"
        path += f"/{cls.crd.plural}"
        return f"{path}/{name}" if name else path


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
