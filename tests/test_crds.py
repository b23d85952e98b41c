"""CRDs are generated from the pydantic models, and the committed crds/ must match them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from paybill.api import RESOURCES, Tenant
from paybill.api.crdgen import all_crds, openapi_schema, render

REPO = Path(__file__).resolve().parents[1]


def test_committed_crds_are_fresh() -> None:
    for crd in all_crds():
        path = REPO / "crds" / f"{crd['metadata']['name']}.yaml"
        assert path.exists(), f"{path} is missing: run make crds"
        assert path.read_text() == render(crd), f"{path} is stale: run make crds"


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.crd.kind)
def test_every_status_has_the_standard_shape(resource: type) -> None:
    status = openapi_schema(resource)["properties"]["status"]["properties"]
    assert {"phase", "observedGeneration", "conditions"} <= set(status)
    condition = status["conditions"]["items"]
    assert set(condition["required"]) == {"type", "status"}
    assert condition["properties"]["status"]["enum"] == ["True", "False", "Unknown"]


def _walk(schema: dict, path: str = "") -> list[tuple[str, dict]]:
    nodes = [(path, schema)]
    for name, sub in (schema.get("properties") or {}).items():
        nodes += _walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        nodes += _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        nodes += _walk(schema["additionalProperties"], f"{path}{{}}")
    return nodes


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.crd.kind)
def test_schemas_are_structural_and_documented(resource: type) -> None:
    for path, node in _walk(openapi_schema(resource)):
        assert not {"$ref", "anyOf", "allOf", "oneOf", "title", "$defs"} & set(node), path
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields") or \
            node.get("x-kubernetes-int-or-string"), path
        if path.startswith(".spec.") and not path.endswith(("[]", "{}")):
            assert node.get("description"), f"{resource.crd.kind}{path} has no description (kubectl explain)"


def test_tenant_crd_carries_printer_columns_names_and_rules() -> None:
    crd = next(c for c in all_crds() if c["spec"]["names"]["kind"] == "Tenant")
    version = crd["spec"]["versions"][0]
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Plan", "Isolation", "Phase", "Ready", "Age"]
    assert version["subresources"] == {"status": {}}
    assert crd["spec"]["names"]["categories"] == ["paybill"] and crd["spec"]["scope"] == "Cluster"
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["deletionPolicy"]["enum"] == ["retain", "snapshot", "destroy"]
    assert spec["x-kubernetes-validations"][0]["message"] == "namespace is immutable once set"
    assert Tenant.crd.namespaced is False


def test_samples_parse_with_the_models() -> None:
    by_kind = {r.crd.kind: r for r in RESOURCES}
    count = 0
    for path in sorted((REPO / "manifests" / "samples").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            by_kind[doc["kind"]].model_validate({"spec": doc["spec"]})
            count += 1
    assert count >= 12


def test_chart_carries_the_same_crds() -> None:
    for crd in all_crds():
        name = f"{crd['metadata']['name']}.yaml"
        assert (REPO / "charts" / "paybill" / "crds" / name).read_text() == render(crd), f"run make crds: {name}"


def test_optional_objects_default_only_where_absence_means_nothing() -> None:
    """`limits` (always in force) defaults to {} so its fields default; `approval` (absent: none needed) must not."""
    from paybill.api.agentpolicy import AgentPolicy
    from paybill.kube.schema import apply_defaults

    schema = openapi_schema(AgentPolicy)["properties"]["spec"]
    spec = apply_defaults({"subjects": ["agent:a"], "rules": [
        {"id": "plain", "effect": "allow", "actions": ["select"], "tables": ["t"]},
        {"id": "gated", "effect": "allow", "actions": ["update"], "tables": ["t"], "approval": {"approvers": ["u"]}}]},
        schema)
    assert "approval" not in spec["rules"][0]
    assert spec["rules"][1]["approval"] == {"approvers": ["u"], "minApprovals": 1}
    assert spec["limits"]["maxRowsRead"] == 1000
