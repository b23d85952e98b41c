"""Owned objects converge back to the plan when edited by hand: on the change (a watch), and on a resync period
for what a watch cannot see. Only objects the Tenant controls by uid are overwritten; a foreign object of an
owned name is a conflict (condition + Warning Event), left as it is (issue 11, item 10)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from paybill.handlers.repair import resync
from paybill.lifecycle.drift import (
    OwnedAction,
    converged,
    drift,
    key_of,
    maintained,
    owned_action,
    same,
    stamped,
)
from paybill.lifecycle.tenant import TENANT_ADMIN_RULES, owned_manifests, tenant_resources
from test_tenant_lifecycle import onboard, plan, wait_phase

API = "paybill.dev/v1alpha1"
RBAC = "rbac.authorization.k8s.io/v1"
TENANT = {
    "apiVersion": API,
    "kind": "Tenant",
    "metadata": {"name": "acme", "uid": "uid-acme"},
    "spec": {"planRef": "pro"},
}
PLAN = {"metadata": {"name": "pro"}, "spec": {"isolation": "pooled", "quotas": {"cpu": "2", "memory": "2Gi"}}}


def desired(kind: str) -> dict[str, Any]:
    return next(m for m in owned_manifests(TENANT, PLAN) if m["kind"] == kind)


def observed(kind: str, **changes: Any) -> dict[str, Any]:
    return stored(desired(kind), **changes)


def stored(manifest: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The object as the server keeps it: the manifest plus server fields, then `changes` on top."""
    obj = copy.deepcopy(manifest)
    obj["metadata"].update(uid="uid-object", resourceVersion="42", creationTimestamp="2026-11-30T00:00:00Z")
    obj["metadata"]["labels"]["team"] = "billing"  # someone else's label: not drift
    obj["status"] = {"used": {"requests.cpu": "0"}}
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = obj
        for part in parents:
            node = node[part]
        node[last] = value
    return obj


QUOTA_HARD = desired("ResourceQuota")["spec"]["hard"]


@pytest.mark.parametrize(
    ("existing", "action"),
    [
        (None, OwnedAction.CREATE),
        (observed("ResourceQuota"), OwnedAction.KEEP),
        (
            observed("ResourceQuota", spec__hard={**QUOTA_HARD, "requests.cpu": "2000m", "limits.cpu": "2.0"}),
            OwnedAction.KEEP,
        ),
        (observed("ResourceQuota", spec__hard={**QUOTA_HARD, "requests.cpu": "100"}), OwnedAction.UPDATE),
        (observed("ResourceQuota", spec__hard={**QUOTA_HARD, "pods": "1000"}), OwnedAction.UPDATE),
        (observed("ResourceQuota", metadata__labels={}), OwnedAction.UPDATE),
        (observed("ResourceQuota", metadata__ownerReferences=[]), OwnedAction.CONFLICT),
        (
            observed(
                "ResourceQuota",
                metadata__ownerReferences=[
                    {**desired("ResourceQuota")["metadata"]["ownerReferences"][0], "uid": "uid-another-acme"}
                ],
            ),
            OwnedAction.CONFLICT,
        ),
        (
            observed(
                "ResourceQuota",
                metadata__ownerReferences=[
                    {**desired("ResourceQuota")["metadata"]["ownerReferences"][0], "controller": False}
                ],
            ),
            OwnedAction.CONFLICT,
        ),
        # a label naming the tenant proves nothing: anyone can write it
        (observed("ResourceQuota", metadata__ownerReferences=None), OwnedAction.CONFLICT),
    ],
)
def test_owned_action_overwrites_only_what_the_tenant_controls(
    existing: dict[str, Any] | None, action: OwnedAction
) -> None:
    assert owned_action(existing, desired("ResourceQuota")) == action


@pytest.mark.parametrize(
    "kind", ["Namespace", "ServiceAccount", "Role", "RoleBinding", "ResourceQuota", "LimitRange", "NetworkPolicy"]
)
def test_every_owned_kind_is_in_sync_as_created_and_drifts_when_edited(kind: str) -> None:
    assert owned_action(observed(kind), desired(kind)) == OwnedAction.KEEP
    assert (
        owned_action(observed(kind, metadata__labels={"paybill.dev/tenant": "other"}), desired(kind))
        == OwnedAction.UPDATE
    )


def test_a_widened_role_is_drift_and_is_replaced_whole() -> None:
    role = next(
        m for m in tenant_resources(TENANT, PLAN) if m["kind"] == "Role" and m["metadata"]["name"] == "tenant-admin"
    )
    widened = observed("Role", rules=[*TENANT_ADMIN_RULES, {"apiGroups": [""], "resources": ["*"], "verbs": ["*"]}])
    assert owned_action(widened, role) == OwnedAction.UPDATE
    body = converged(widened, role)
    assert body["rules"] == TENANT_ADMIN_RULES
    assert body["metadata"]["resourceVersion"] == "42" and body["metadata"]["uid"] == "uid-object"
    assert body["metadata"]["labels"]["team"] == "billing" and body["status"] == widened["status"]


def test_an_object_the_plan_now_wants_different_is_updated_and_only_an_edited_one_is_drift() -> None:
    written = stored(stamped(desired("ResourceQuota")))
    assert owned_action(written, desired("ResourceQuota")) == OwnedAction.KEEP
    edited = copy.deepcopy(written)
    edited["spec"]["hard"]["requests.cpu"] = "100"
    assert owned_action(edited, desired("ResourceQuota")) == OwnedAction.REVERT
    bigger = {**PLAN, "spec": {**PLAN["spec"], "quotas": {"cpu": "4", "memory": "2Gi"}}}
    wanted = next(m for m in owned_manifests(TENANT, bigger) if m["kind"] == "ResourceQuota")
    assert owned_action(written, wanted) == OwnedAction.UPDATE
    assert owned_action(stored(stamped(wanted)), wanted) == OwnedAction.KEEP
    assert owned_action(converged(edited, wanted), wanted) == OwnedAction.KEEP  # the update records what it wrote


def test_quantities_compare_by_value_and_nothing_else_does() -> None:
    assert same("1", "1000m") and same("1Gi", "1024Mi") and same({"cpu": "0.5"}, {"cpu": "500m"})
    assert not same("1", "100") and not same("Ingress", "Egress") and not same(["a"], ["a", "b"])
    assert not same({"a": "1"}, {"a": "1", "b": "2"}) and not same(1, True) and not same("1", 1)


def test_drift_lists_what_is_missing_changed_or_foreign() -> None:
    manifests = owned_manifests(TENANT, PLAN)
    state = {key_of(m): stored(m) for m in manifests}
    assert drift(manifests, state) == []
    quota, network = key_of(desired("ResourceQuota")), key_of(desired("NetworkPolicy"))
    state[quota] = observed("ResourceQuota", spec__hard={**QUOTA_HARD, "limits.cpu": "100"})
    state[network] = observed("NetworkPolicy", metadata__ownerReferences=[])
    del state[key_of(desired("LimitRange"))]
    found = {(key_of(d.manifest)[0], d.action, d.resource_version) for d in drift(manifests, state)}
    assert found == {
        ("ResourceQuota", OwnedAction.UPDATE, "42"),
        ("NetworkPolicy", OwnedAction.CONFLICT, "42"),
        ("LimitRange", OwnedAction.CREATE, ""),
    }


def test_objects_are_maintained_until_offboarding() -> None:
    assert maintained(TENANT) and maintained({**TENANT, "status": {"phase": "Suspended"}})
    assert not maintained({**TENANT, "spec": {"planRef": "pro", "offboard": True}})
    assert not maintained({**TENANT, "status": {"phase": "Offboarded"}})
    assert not maintained({**TENANT, "metadata": {**TENANT["metadata"], "deletionTimestamp": "2026-11-30T00:00:00Z"}})


# --- through the operator on the emulated API server -------------------------------------------------------------


def _quota(cluster: Any, namespace: str) -> dict[str, Any]:
    return cluster.kube.get("v1", "resourcequotas", "paybill-quota", namespace) or {}


def _events(cluster: Any, name: str, reason: str) -> list[dict[str, Any]]:
    return [
        e for e in cluster.kube.list("v1", "events") if e["involvedObject"]["name"] == name and e["reason"] == reason
    ]


@pytest.mark.slow
def test_objects_edited_by_hand_return_to_the_plan(operator: Any) -> None:
    kube = operator.kube
    name = onboard(operator, "pooled")
    wait_phase(operator, name, "Active")
    namespace = f"tenant-{name}"
    assert _quota(operator, namespace)["spec"]["hard"]["requests.cpu"] == "2"

    kube.merge_patch(
        "v1",
        "resourcequotas",
        "paybill-quota",
        {"spec": {"hard": {"requests.cpu": "100", "limits.cpu": "100"}}},
        namespace,
    )
    kube.merge_patch(
        RBAC, "roles", "tenant-admin", {"rules": [{"apiGroups": [""], "resources": ["*"], "verbs": ["*"]}]}, namespace
    )
    kube.merge_patch(
        "networking.k8s.io/v1",
        "networkpolicies",
        "paybill-default-deny",
        {"spec": {"policyTypes": ["Ingress"]}},
        namespace,
    )

    operator.eventually(
        lambda: (
            _quota(operator, namespace)["spec"]["hard"]
            == {
                "requests.cpu": "2",
                "limits.cpu": "2",
                "requests.memory": "2Gi",
                "limits.memory": "2Gi",
                "requests.storage": "5Gi",
            }
        )
    )
    operator.eventually(lambda: kube.get(RBAC, "roles", "tenant-admin", namespace)["rules"] == TENANT_ADMIN_RULES)
    operator.eventually(
        lambda: (
            kube.get("networking.k8s.io/v1", "networkpolicies", "paybill-default-deny", namespace)["spec"][
                "policyTypes"
            ]
            == ["Ingress", "Egress"]
        )
    )
    reverted = operator.eventually(lambda: _events(operator, name, "DriftReverted"))
    assert any("ResourceQuota" in e["message"] for e in reverted)
    assert wait_phase(operator, name, "Active")["conditions"]


@pytest.mark.slow
def test_a_plan_change_is_applied_to_the_objects_and_not_called_drift(operator: Any) -> None:
    kube, name = operator.kube, "grows"
    kube.apply(plan("plan-grows", "pooled"))
    kube.apply(
        {
            "apiVersion": API,
            "kind": "Subscription",
            "metadata": {"name": name},
            "spec": {"tenantRef": name, "planRef": "plan-grows", "billingStatus": "active"},
        }
    )
    kube.apply({"apiVersion": API, "kind": "Tenant", "metadata": {"name": name}, "spec": {"planRef": "plan-grows"}})
    wait_phase(operator, name, "Active")
    kube.merge_patch(API, "plans", "plan-grows", {"spec": {"quotas": {"cpu": "3"}}})
    operator.eventually(lambda: _quota(operator, f"tenant-{name}")["spec"]["hard"]["requests.cpu"] == "3")
    applied = operator.eventually(lambda: _events(operator, name, "PlanApplied"))
    assert any("ResourceQuota" in e["message"] and "plan-grows" in e["message"] for e in applied)
    assert _events(operator, name, "DriftReverted") == []


@pytest.fixture
def resyncing_operator(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[Any]:
    monkeypatch.setenv("PAYBILL_RESYNC_SECONDS", "1")
    yield request.getfixturevalue("operator")


@pytest.mark.slow
def test_drift_no_watch_sees_is_reverted_by_the_resync(resyncing_operator: Any) -> None:
    """Removing the tenant label takes the quota out of the labelled watch; the periodic resync finds it by name
    and the reconcile puts cpu and label back. In steady state the resync finds nothing (and writes nothing)."""
    operator = resyncing_operator
    name = onboard(operator, "pooled")
    wait_phase(operator, name, "Active")
    namespace = f"tenant-{name}"
    operator.kube.merge_patch(
        "v1",
        "resourcequotas",
        "paybill-quota",
        {
            "metadata": {"labels": {"paybill.dev/tenant": None}},
            "spec": {"hard": {"requests.cpu": "100", "limits.cpu": "100"}},
        },
        namespace,
    )
    back = operator.eventually(
        lambda: _quota(operator, namespace)["spec"]["hard"]["requests.cpu"] == "2" and _quota(operator, namespace)
    )
    assert back["metadata"]["labels"]["paybill.dev/tenant"] == name
    assert back["spec"]["hard"]["limits.cpu"] == "2"
    operator.eventually(lambda: name not in resync(operator.kube))


def test_resync_finds_drift_by_name_and_annotates_only_the_tenant_that_drifted(cluster: Any) -> None:
    """Without the operator: the objects as it would have made them, then a quota edited and unlabelled by hand
    (out of every labelled list and watch). The resync reads it by name and annotates its Tenant, once."""
    kube = cluster.kube
    plan = kube.create(
        {
            "apiVersion": API,
            "kind": "Plan",
            "metadata": {"name": "pro"},
            "spec": {"tier": "pro", "isolation": "pooled", "quotas": {"cpu": "2"}},
        }
    )
    tenants = [kube.create({**TENANT, "metadata": {"name": name}}) for name in ("acme", "globex")]
    for tenant in tenants:
        for manifest in owned_manifests(tenant, plan):
            kube.create(manifest)
    assert resync(kube) == {}
    kube.merge_patch(
        "v1",
        "resourcequotas",
        "paybill-quota",
        {"metadata": {"labels": {"paybill.dev/tenant": None}}, "spec": {"hard": {"requests.cpu": "100"}}},
        "tenant-acme",
    )
    found = resync(kube)
    assert [(name, [str(d) for d in drifts]) for name, drifts in found.items()] == [
        ("acme", ["ResourceQuota tenant-acme/paybill-quota: Update"])
    ]
    annotations = kube.get(API, "tenants", "acme")["metadata"]["annotations"]
    assert annotations["trigger.paybill.dev/repair"].startswith("resync: ResourceQuota tenant-acme/paybill-quota")
    assert "annotations" not in kube.get(API, "tenants", "globex")["metadata"]


@pytest.mark.slow
def test_a_foreign_object_of_an_owned_name_is_reported_and_never_overwritten(operator: Any) -> None:
    kube = operator.kube
    kube.create(
        {"apiVersion": API, "kind": "Tenant", "metadata": {"name": "squatted"}, "spec": {"planRef": "plan-squatted"}}
    )
    uid = operator.eventually(lambda: kube.get(API, "tenants", "squatted")["metadata"]["uid"])
    # The namespace is the tenant's (controlled by its uid), the quota in it is not.
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": "tenant-squatted",
                "ownerReferences": [
                    {"apiVersion": API, "kind": "Tenant", "name": "squatted", "uid": uid, "controller": True}
                ],
            },
        }
    )
    foreign = kube.create(
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {
                "name": "paybill-quota",
                "namespace": "tenant-squatted",
                "labels": {"paybill.dev/tenant": "squatted"},
            },
            "spec": {"hard": {"requests.cpu": "100"}},
        }
    )
    kube.create(
        {
            "apiVersion": API,
            "kind": "Plan",
            "metadata": {"name": "plan-squatted"},
            "spec": {"tier": "free", "isolation": "pooled"},
        }
    )

    def conflict() -> dict[str, Any] | None:
        conditions = (kube.get(API, "tenants", "squatted").get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == "NamespaceReady" and c["reason"] == "ObjectConflict"), None)

    condition = operator.eventually(conflict, timeout=40)
    assert condition["status"] == "False"
    assert condition["message"] == (
        "ResourceQuota tenant-squatted/paybill-quota exists and is not controlled by "
        "Tenant squatted; it is left as it is"
    )
    warnings = operator.eventually(lambda: _events(operator, "squatted", "ObjectConflict"))
    assert warnings[0]["type"] == "Warning"
    ready = next(c for c in kube.get(API, "tenants", "squatted")["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "ObjectConflict"
    kept = _quota(operator, "tenant-squatted")
    assert (
        kept["spec"] == foreign["spec"]
        and kept["metadata"]["resourceVersion"] == foreign["metadata"]["resourceVersion"]
    )
