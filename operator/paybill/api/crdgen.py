"""Generate CustomResourceDefinitions from the pydantic models (``make crds``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from . import RESOURCES
from .meta import CATEGORY, GROUP, ROOT, VERSION, CustomResource

# JSON Schema keywords a structural schema keeps; everything else pydantic emits (title, ...) is dropped.
KEPT_KEYWORDS = {
    "type",
    "description",
    "enum",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "format",
    "default",
    "required",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
}


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline $refs and turn pydantic's JSON Schema into a Kubernetes structural schema."""
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    if "anyOf" in node:
        variants = [v for v in node["anyOf"] if v.get("type") != "null"]
        nullable = len(variants) < len(node["anyOf"])
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if len(variants) == 1:
            out = _structural({**variants[0], **rest}, defs)
        else:  # scalar unions (workflow params): accept any scalar value
            out = {k: v for k, v in rest.items() if k in KEPT_KEYWORDS}
            out["x-kubernetes-int-or-string"] = True if _is_int_or_string(variants) else None
            if out["x-kubernetes-int-or-string"] is None:
                del out["x-kubernetes-int-or-string"]
                out["x-kubernetes-preserve-unknown-fields"] = True
        if nullable:
            out["nullable"] = True
            if out.get("default", 0) is None:
                del out["default"]
        return out

    out = {k: v for k, v in node.items() if k in KEPT_KEYWORDS}
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if exclusive in out:  # JSON Schema 2020-12 numeric form -> OpenAPI v3.0 boolean form
            out[bound], out[exclusive] = out[exclusive], True
    if "const" in node:
        out["enum"] = [node["const"]]
    if node.get("type") == "object" or "properties" in node:
        out["type"] = "object"
        props = node.get("properties", {})
        if props:
            out["properties"] = {name: _structural(sub, defs) for name, sub in props.items()}
            for name, sub in out["properties"].items():
                # An optional object whose fields have defaults defaults to {}, so they apply (and CEL can read them);
                # not one whose default is null (absent means something there, e.g. no approval needed).
                if (
                    name not in node.get("required", ())
                    and sub.get("type") == "object"
                    and any("default" in field for field in (sub.get("properties") or {}).values())
                    and (props[name].get("default", {}) is not None)
                ):
                    sub.setdefault("default", {})
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            out["additionalProperties"] = _structural(extra, defs)
    if node.get("type") == "array":
        out["items"] = _structural(node.get("items", {}), defs)
    if out.get("default") in ({}, None) and "default" in out and out.get("type") != "object":
        del out["default"]
    return out


def _is_int_or_string(variants: list[dict[str, Any]]) -> bool:
    return sorted(v.get("type", "") for v in variants) == ["integer", "string"]


def _place_rules(schema: dict[str, Any], cls: type[CustomResource]) -> None:
    for rule in cls.crd.validations:
        if rule.path == ROOT:
            schema.setdefault("x-kubernetes-validations", []).append({"rule": rule.rule, "message": rule.message})
            continue
        target = schema["properties"]["spec"]
        for part in filter(None, rule.path.split(".")):
            target = target["properties"][part]
        target.setdefault("x-kubernetes-validations", []).append({"rule": rule.rule, "message": rule.message})


def openapi_schema(cls: type[CustomResource]) -> dict[str, Any]:
    """The openAPIV3Schema of one resource."""
    raw = cls.model_json_schema(mode="validation")
    defs = raw.get("$defs", {})
    spec = _structural(raw["properties"]["spec"], defs)
    spec["description"] = f"Desired state of the {cls.crd.kind}."
    status = _structural(raw["properties"]["status"], defs)
    status.pop("nullable", None)
    status["description"] = f"Observed state of the {cls.crd.kind}, written by the operator."
    schema: dict[str, Any] = {
        "type": "object",
        "description": cls.crd.description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion of this object: " + f"{GROUP}/{VERSION}."},
            "kind": {"type": "string", "description": f"Kind of this object: {cls.crd.kind}."},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }
    _place_rules(schema, cls)
    return schema


def crd_manifest(cls: type[CustomResource]) -> dict[str, Any]:
    info = cls.crd
    names: dict[str, Any] = {
        "kind": info.kind,
        "listKind": f"{info.kind}List",
        "plural": info.plural,
        "singular": info.singular,
        "categories": [CATEGORY],
    }
    if info.short_names:
        names["shortNames"] = list(info.short_names)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{info.plural}.{GROUP}", "labels": {"app.kubernetes.io/part-of": "paybill"}},
        "spec": {
            "group": GROUP,
            "names": names,
            "scope": "Namespaced" if info.namespaced else "Cluster",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": openapi_schema(cls)},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [column.to_crd() for column in info.printer_columns],
                }
            ],
        },
    }


def all_crds() -> list[dict[str, Any]]:
    return [crd_manifest(cls) for cls in RESOURCES]


def render(crd: dict[str, Any]) -> str:
    header = "# Generated by `make crds` from operator/paybill/api. Do not edit by hand.\n"
    return header + yaml.safe_dump(crd, sort_keys=False, width=120)


def write_all(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for crd in all_crds():
        path = directory / f"{crd['metadata']['name']}.yaml"
        path.write_text(render(crd))
        written.append(path)
    return written
