"""CRDs are generated from the pydantic models, and the committed crds/ must match them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

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
        assert (
            "type" in node or node.get("x-kubernetes-preserve-unknown-fields") or node.get("x-kubernetes-int-or-string")
        ), path
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
    assert spec["x-kubernetes-validations"][0]["message"].startswith("namespace is fixed when the Tenant is created")
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
        chart_copy = REPO / "charts" / "paybill" / "files" / "crds" / name  # templates/crds.yaml renders it
        assert chart_copy.read_text() == render(crd), f"run make crds: {name}"


def test_optional_objects_default_only_where_absence_means_nothing() -> None:
    """`limits` (always in force) defaults to {} so its fields default; `approval` (absent: none needed) must not."""
    from paybill.api.agentpolicy import AgentPolicy
    from paybill.kube.schema import apply_defaults

    schema = openapi_schema(AgentPolicy)["properties"]["spec"]
    spec = apply_defaults(
        {
            "subjects": [{"serviceAccount": "tenant-agent", "agent": "agent:a"}],
            "rules": [
                {"id": "plain", "effect": "allow", "actions": ["select"], "tables": ["t"]},
                {
                    "id": "gated",
                    "effect": "allow",
                    "actions": ["update"],
                    "tables": ["t"],
                    "approval": {"approvers": ["u"]},
                },
            ],
        },
        schema,
    )
    assert "approval" not in spec["rules"][0]
    assert spec["rules"][1]["approval"] == {"approvers": ["u"], "minApprovals": 1}
    assert spec["limits"]["maxRowsRead"] == 1000
    assert spec["limits"]["maxBytesRead"] == 16 * 1024 * 1024


# --- list semantics and CEL cost (issue 11, item 9) -----------------------------------------------------------------

SCALARS = {"string", "integer", "number", "boolean"}


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.crd.kind)
def test_every_list_declares_how_it_merges(resource: type) -> None:
    """atomic, set (scalar items) or map (object items keyed by required or defaulted scalars): what server-side
    apply needs to merge a list, and what the apiserver checks for uniqueness."""
    for path, node in _walk(openapi_schema(resource)):
        if node.get("type") != "array":
            continue
        list_type = node.get("x-kubernetes-list-type")
        assert list_type in ("atomic", "set", "map"), f"{resource.crd.kind}{path} has no x-kubernetes-list-type"
        items = node["items"]
        if list_type == "set":
            assert items.get("type") in SCALARS, f"{path}: a set holds scalars"
        if list_type == "map":
            keys = node["x-kubernetes-list-map-keys"]
            assert items["type"] == "object" and keys, path
            for key in keys:
                assert items["properties"][key]["type"] in SCALARS, f"{path}: key {key} must be a scalar"
                assert key in items.get("required", ()) or "default" in items["properties"][key], (
                    f"{path}: key {key} must be required or defaulted"
                )
        else:
            assert "x-kubernetes-list-map-keys" not in node, path


def test_keyed_lists_are_maps_by_their_key() -> None:
    from paybill.api.agentpolicy import AgentPolicy
    from paybill.api.agentworkflow import AgentWorkflow

    def keys(resource: type, path: str) -> list[str]:
        return dict(_walk(openapi_schema(resource)))[path]["x-kubernetes-list-map-keys"]

    assert keys(AgentPolicy, ".spec.rules") == ["id"]
    assert keys(AgentWorkflow, ".spec.steps") == ["name"]
    assert keys(AgentWorkflow, ".status.steps") == ["name"]
    for resource in RESOURCES:
        assert keys(resource, ".status.conditions") == ["type"]


MACRO = re.compile(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\.(?:all|exists|exists_one|map|filter)\(\s*([A-Za-z_]\w*)\s*,")
REFERENCE = re.compile(r"(?<![\w.])([A-Za-z_]\w*)((?:\.[A-Za-z_]\w*)*)(\s*\()?")


# What kube-apiserver lets a rule at the root read of metadata, and its bound (a DNS subdomain).
METADATA = {
    "type": "object",
    "properties": {field: {"type": "string", "maxLength": 253} for field in ("name", "generateName")},
}


def _resolve(node: dict, fields: list[str]) -> dict | None:
    for name in fields:
        if name in (node.get("properties") or {}):
            node = node["properties"][name]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return None
    return node


def _element(node: dict) -> dict:
    return node.get("items") or node.get("additionalProperties") or {}


def unbounded_cel_reads(schema: dict, path: str = "") -> list[str]:
    """Every list, map or string a CEL rule reads (a variable, a field path, or a macro's element) must carry
    maxItems, maxProperties or maxLength: else the apiserver's cost estimate is unbounded and refuses the CRD."""
    problems = []
    for rule in schema.get("x-kubernetes-validations", ()):
        expression = re.sub(r"'[^']*'|\"[^\"]*\"", "''", rule["rule"])
        node = schema if path else {**schema, "properties": {**schema.get("properties", {}), "metadata": METADATA}}
        scope: dict[str, dict | None] = {"self": node, "oldSelf": node}
        for target, variable in MACRO.findall(expression):
            head, *fields = target.split(".")
            collection = _resolve(scope[head], fields) if scope.get(head) is not None else None
            scope[variable] = _element(collection) if collection is not None else None
        for head, dotted, call in REFERENCE.findall(expression):
            if head not in scope:
                continue
            fields = dotted.split(".")[1:]
            if call and fields:
                fields = fields[:-1]  # x.startsWith(...): the method is not a field
            node = _resolve(scope[head] or {}, fields) if scope[head] is not None else None
            where = f"{path}: {rule['rule']!r} reads {'.'.join([head, *fields])}"
            if node is None:
                problems.append(f"{where}, which the schema does not declare")
            elif node.get("type") == "array" and "maxItems" not in node:
                problems.append(f"{where}, a list without maxItems")
            elif node.get("type") == "string" and "maxLength" not in node and "enum" not in node:
                problems.append(f"{where}, a string without maxLength")
            elif node.get("type") == "object" and "additionalProperties" in node and "maxProperties" not in node:
                problems.append(f"{where}, a map without maxProperties")
    for name, sub in (schema.get("properties") or {}).items():
        problems += unbounded_cel_reads(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            problems += unbounded_cel_reads(schema[key], f"{path}[]")
    return problems


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.crd.kind)
def test_cel_rules_read_only_bounded_lists_maps_and_strings(resource: type) -> None:
    assert unbounded_cel_reads(openapi_schema(resource)) == []


def test_the_cel_bound_check_finds_unbounded_reads() -> None:
    """The check above can fail: an O(n^2) uniqueness rule over an unbounded list, a string rule without
    maxLength, a rule over an unbounded map, and a rule naming a field the schema lacks."""
    text = {"type": "string"}
    rules = {"type": "array", "items": {"type": "object", "properties": {"id": text}}}
    schema = {
        "type": "object",
        "properties": {"rules": rules, "name": text, "prices": {"type": "object", "additionalProperties": text}},
        "x-kubernetes-validations": [
            {"rule": "self.rules.all(r, self.rules.exists_one(s, s.id == r.id))", "message": "unique"},
            {"rule": "self.name.startsWith('kube-')", "message": "system"},
            {"rule": "size(self.prices) > 0", "message": "priced"},
            {"rule": "has(self.missing)", "message": "declared"},
        ],
    }
    problems = unbounded_cel_reads(schema)
    assert any("self.rules, a list without maxItems" in p for p in problems)
    assert any("s.id, a string without maxLength" in p for p in problems)
    assert any("self.name, a string without maxLength" in p for p in problems)
    assert any("self.prices, a map without maxProperties" in p for p in problems)
    assert any("self.missing, which the schema does not declare" in p for p in problems)
    rules["maxItems"], text["maxLength"] = 10, 63
    schema["properties"]["prices"]["maxProperties"] = 5
    schema["x-kubernetes-validations"].pop()
    assert unbounded_cel_reads(schema) == []


def _policy(rules: Any = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"subjects": [{"serviceAccount": "tenant-agent", "agent": "agent:a"}], **spec}
    if rules is not None:
        body["rules"] = rules
    return {
        "apiVersion": "paybill.dev/v1alpha1",
        "kind": "AgentPolicy",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": body,
    }


def _rule(rule_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": rule_id, "effect": "allow", "actions": ["select"], "tables": ["t"], **fields}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            _policy([_rule("x"), _rule("y"), _rule("x", effect="deny")]),
            'AgentPolicy.paybill.dev "p" is invalid: spec.rules[2]: Duplicate value: map[string]interface {}{"id":"x"}',
        ),
        (
            _policy([_rule("x", tables=["orders", "orders"])]),
            'AgentPolicy.paybill.dev "p" is invalid: spec.rules[0].tables[1]: Duplicate value: "orders"',
        ),
        (_policy(), 'AgentPolicy.paybill.dev "p" is invalid: spec.rules: Required value'),
        (
            _policy([_rule(f"r{n}") for n in range(257)]),
            'AgentPolicy.paybill.dev "p" is invalid: spec.rules: Too many: 257: must have at most 256 items',
        ),
    ],
)
def test_the_emulator_refuses_policies_like_a_real_apiserver(cluster: Any, spec: dict[str, Any], message: str) -> None:
    from paybill.kubeclient import KubeError

    with pytest.raises(KubeError) as refused:
        cluster.kube.create(spec)
    assert refused.value.status == 422 and refused.value.message == message
    assert cluster.kube.get("paybill.dev/v1alpha1", "agentpolicies", "p", "default") is None


def test_a_policy_with_an_empty_rule_list_is_an_explicit_deny_all(cluster: Any) -> None:
    created = cluster.kube.create(_policy([]))
    assert created["spec"]["rules"] == []


def test_a_workflow_with_two_steps_of_one_name_is_refused(cluster: Any) -> None:
    from paybill.kubeclient import KubeError

    step = {"name": "read", "kind": "query", "sql": "SELECT 1"}
    workflow = {
        "apiVersion": "paybill.dev/v1alpha1",
        "kind": "AgentWorkflow",
        "metadata": {"name": "w", "namespace": "default"},
        "spec": {"principal": "agent:a", "policyRef": "p", "steps": [step, {**step, "sql": "SELECT 2"}]},
    }
    with pytest.raises(KubeError) as refused:
        cluster.kube.create(workflow)
    assert refused.value.message.endswith('spec.steps[1]: Duplicate value: map[string]interface {}{"name":"read"}')
    workflow["spec"]["steps"][1]["name"] = "again"
    cluster.kube.create(workflow)


def _tenant(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "paybill.dev/v1alpha1",
        "kind": "Tenant",
        "metadata": {"name": name},
        "spec": {"planRef": "pro", **spec},
    }


@pytest.mark.parametrize("name", ["a.b", "x" * 57, "y" * 100])
def test_a_tenant_name_that_cannot_make_its_namespace_is_refused(cluster: Any, name: str) -> None:
    """`tenant-<name>` must be a namespace name (a DNS label of at most 63 characters): refused at admission,
    not after the operator failed to create the namespace."""
    from paybill.kubeclient import KubeError

    with pytest.raises(KubeError) as refused:
        cluster.kube.create(_tenant(name))
    assert refused.value.status == 422 and "must be a DNS label of at most 56 characters" in refused.value.message
    assert cluster.kube.create(_tenant("z" * 56))["metadata"]["name"] == "z" * 56


def test_a_tenants_namespace_is_fixed_when_it_is_created(cluster: Any) -> None:
    """Setting spec.namespace later would build a second namespace and leave the first behind."""
    from paybill.kubeclient import KubeError

    cluster.kube.create(_tenant("acme"))
    cluster.kube.create(_tenant("globex", namespace="globex-ns"))
    for name, change in (
        ("acme", {"namespace": "tenant-moved"}),
        ("globex", {"namespace": "elsewhere"}),
        ("globex", {"namespace": None}),
    ):
        with pytest.raises(KubeError, match="namespace is fixed when the Tenant is created"):
            cluster.kube.merge_patch("paybill.dev/v1alpha1", "tenants", name, {"spec": change})
    assert "namespace" not in cluster.kube.get("paybill.dev/v1alpha1", "tenants", "acme")["spec"]


def test_a_namespace_name_longer_than_a_dns_label_is_refused(cluster: Any) -> None:
    from paybill.kubeclient import KubeError

    with pytest.raises(KubeError) as refused:
        cluster.kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n" * 64}})
    assert refused.value.message.endswith(
        f'metadata.name: Invalid value: "{"n" * 64}": must be no more than 63 characters'
    )
